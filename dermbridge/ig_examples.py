"""The IG package's examples, one per profile, taken from what a DermBridge server really writes: a server in
this process, on a throw-away data directory, goes through one case as a clinic would (the EHR writes the
patient and their AI-analysis consent, a dermatoscope sends an image, the demonstration model analyses it,
a dermatologist claims the review and overrides the AI's diagnosis). Then, for each profile, the first
resource of its type that the server's own ``$validate`` passes against that profile becomes its example,
with server-assigned ids, versions and times replaced by stable ones (implementationguide.html#examples)."""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from conformance.ig.stable_ids import stable_ids
from dermbridge.app import create_app
from dermbridge.settings import Settings
from dicom_node.sop_classes import DERMOSCOPIC_PHOTOGRAPHY
from fhir_server.declared_profiles import CANONICAL_BASE
from inference.synthetic import lesion_image, random_spec

log = logging.getLogger(__name__)
T = TypeVar("T")
TENANT = "default"
BASE = f"/fhir/{TENANT}"
DEADLINE = 300.0  # seconds for the model's first analysis on a slow machine
SNOMED = "http://snomed.info/sct"
AI_PURPOSE = {"system": "urn:dermbridge:purpose-of-use", "code": "ai-analysis"}
REVIEW = "urn:dermbridge:task|clinician-review"
DERMATOLOGY = {"coding": [{"system": SNOMED, "code": "394582007", "display": "Dermatology"}]}
NAEVUS = {"coding": [{"system": SNOMED, "code": "400096001", "display": "Melanocytic nevus"}]}
SUSPICIOUS_SEED = 11  # a synthetic lesion the demonstration model finds suspicious
PUBLIC_URL = "https://dermbridge.example.org"  # RFC 2606: the examples' URLs name no real server


@dataclass
class Examples:
    """The examples found, and for each profile without one, why."""

    resources: list[dict[str, Any]] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)


def server_examples(profiles: list[dict[str, Any]]) -> Examples:
    """One example per resource profile in ``profiles``, from a case run through a server in this process."""
    with tempfile.TemporaryDirectory(prefix="dermbridge-ig-") as tmp:
        return asyncio.run(_run(profiles, Path(tmp)))


async def _run(profiles: list[dict[str, Any]], tmp: Path) -> Examples:
    app = create_app(Settings(**_settings(tmp)))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=PUBLIC_URL, timeout=120) as http:
            clinic = _Clinic(http, app.state.clients)
            await clinic.sign_in("ig examples", ["admin"])
            await clinic.case(app.state.ingestor)
            found = Examples()
            for profile in profiles:
                if profile.get("kind") == "resource" and profile.get("derivation") == "constraint":
                    await clinic.pick(profile, found)
    found.resources = stable_ids(found.resources, CANONICAL_BASE)
    return found


def _settings(tmp: Path) -> dict[str, Any]:
    """The example server: its own data, the demonstration model, a clinician's review; nothing it sends out.
    No DERMBRIDGE_* variable or .env file reaches it (an operator's database, keys or model must stay untouched)."""
    return {
        "_env_prefix": "DERMBRIDGE_IG_EXAMPLE_SERVER_", "_env_file": None, "data_dir": tmp / "var",
        "public_url": PUBLIC_URL, "dicom_enabled": False, "subscriptions_enabled": False, "retention_every_hours": 0,
        "review_sweep_seconds": 0, "auth_bootstrap_admin": False, "audit_loader": "inline",
        "inference_enabled": True, "inference_human_review": True,
    }  # fmt: skip


async def _until(probe: Callable[[], Awaitable[T | None]], what: str) -> T:
    deadline = time.monotonic() + DEADLINE
    while (answer := await probe()) is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the example case stalled: {what} not within {DEADLINE} s")
        await asyncio.sleep(0.1)
    return answer


class _Clinic:
    def __init__(self, http: httpx.AsyncClient, clients: Any) -> None:
        self.http = http
        self.clients = clients
        self.admin: dict[str, str] = {}

    async def sign_in(self, name: str, roles: list[str], fhir_user: str | None = None) -> dict[str, str]:
        """A token of a new client of the tenant, from the server's token endpoint."""
        client, secret = await self.clients.create(TENANT, name, roles, fhir_user=fhir_user)
        form = {"grant_type": "client_credentials", "client_id": client.client_id, "client_secret": secret}
        answer = await self.http.post("/auth/token", data=form)
        answer.raise_for_status()
        headers = {"Authorization": f"Bearer {answer.json()['access_token']}"}
        if not self.admin:
            self.admin = headers
        return headers

    async def call(self, method: str, path: str, headers: dict[str, str] | None = None, **kw: Any) -> Any:
        answer = await self.http.request(method, f"{BASE}/{path}", headers=headers or self.admin, **kw)
        if answer.status_code >= 300:
            raise RuntimeError(f"the example case: {method} {path} answered {answer.status_code}: {answer.text}")
        return answer.json()

    async def found(self, path: str, **params: str) -> list[dict[str, Any]]:
        bundle = await self.call("GET", path, params={**params, "_count": "100"})
        return [e["resource"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode") == "match"]

    async def case(self, ingestor: Any) -> None:
        """The EHR's patient and consent, a dermatoscope's image, the AI's analysis, a dermatologist's review."""
        patient = await self.call("POST", "Patient", json=_patient())
        await self.call("POST", "Consent", json=_consent(patient["id"]))
        reviewer = await self._dermatologist()
        image = _image()
        raw = DicomBytesIO()
        image.save_as(raw, enforce_file_format=True)
        await ingestor.store(TENANT, image, raw.getvalue(), ExplicitVRLittleEndian)
        task = await _until(lambda: self._first("Task", code=REVIEW, patient=f"Patient/{patient['id']}"), "review")
        await self.call("POST", f"Task/{task['id']}/$claim", reviewer, json=_parameters())
        lesion = (await self.found("BodyStructure", patient=f"Patient/{patient['id']}"))[0]
        finding = [
            {"name": "lesion", "valueReference": {"reference": f"BodyStructure/{lesion['id']}"}},
            {"name": "diagnosis", "valueCodeableConcept": NAEVUS},
            {"name": "urgency", "valueCode": "routine"},
        ]
        decision = _parameters(
            {"name": "decision", "valueCode": "override"},
            {"name": "finding", "part": finding},
            {"name": "conclusion", "valueString": "Benign melanocytic naevus on dermoscopy."},
        )
        await self.call("POST", f"Task/{task['id']}/$complete", reviewer, json=decision)  # fmt: skip

    async def _first(self, path: str, **params: str) -> dict[str, Any] | None:
        return next(iter(await self.found(path, **params)), None)

    async def _dermatologist(self) -> dict[str, str]:
        """A Practitioner with an active Dermatology PractitionerRole, and a token acting for them."""
        practitioner = await self.call(
            "POST",
            "Practitioner",
            json={"resourceType": "Practitioner", "name": [{"family": "Example", "given": ["Dana"], "prefix": ["Dr"]}]},
        )
        reference = f"Practitioner/{practitioner['id']}"
        await self.call("POST", "PractitionerRole", json={"resourceType": "PractitionerRole", "active": True,
                        "practitioner": {"reference": reference}, "specialty": [DERMATOLOGY]})  # fmt: skip
        return await self.sign_in("dermatologist", ["clinician-reviewer"], fhir_user=reference)

    async def pick(self, profile: dict[str, Any], into: Examples) -> None:
        """The first resource of the profile's type that passes ``$validate`` against it."""
        url, resource_type = str(profile["url"]), str(profile["type"])
        candidates = await self.found(resource_type)
        candidates.sort(key=lambda r: url not in r.get("meta", {}).get("profile", []))  # those declaring it first
        last = "the server wrote no " + resource_type
        for candidate in candidates:
            outcome = await self.call("POST", f"{resource_type}/$validate", params={"profile": url}, json=candidate)
            errors = [i for i in outcome.get("issue", []) if i.get("severity") in ("error", "fatal")]
            if not errors:
                meta = candidate.setdefault("meta", {})
                meta["profile"] = [url, *(p for p in meta.get("profile", []) if p != url)]
                into.resources.append(candidate)
                return
            last = "; ".join(f"{i.get('expression', [''])[0]}: {i.get('diagnostics', '')}" for i in errors[:3])
        into.missing[url] = last
        log.warning("no example of %s: %s", url, last)


def _parameters(*items: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": list(items)}


def _patient() -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [{"system": "urn:clinic:mrn", "value": "EXAMPLE-1"}],
            "name": [{"family": "Example", "given": ["Anna"]}], "gender": "female",
            "birthDate": "1970-05-02"}  # fmt: skip


def _consent(patient_id: str) -> dict[str, Any]:
    """The patient's permit of AI analysis, as an EHR records it (consent.html)."""
    return {
        "resourceType": "Consent",
        "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0", "display": "Patient Consent"}]}],
        "patient": {"reference": f"Patient/{patient_id}"},
        "dateTime": "2026-11-02",
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
        "provision": {"type": "permit", "purpose": [AI_PURPOSE]},
    }  # fmt: skip


def _image() -> Dataset:
    """A Dermoscopic Photography image (PS3.3 A.32.11) of a synthetic lesion on the skin, as a dermatoscope
    sends it: the patient's identifier and issuer, the anatomic region, RGB pixels."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SOPClassUID, ds.SOPInstanceUID = DERMOSCOPIC_PHOTOGRAPHY, generate_uid()
    ds.PatientName, ds.PatientID, ds.IssuerOfPatientID = "EXAMPLE^ANNA", "EXAMPLE-1", "urn:clinic:mrn"
    ds.PatientBirthDate, ds.PatientSex = "19700502", "F"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.StudyDate = ds.ContentDate = "20261102"
    ds.StudyTime = ds.ContentTime = "101500"
    ds.AccessionNumber, ds.ReferringPhysicianName, ds.StudyID = "EXAMPLE-ACC-1", "", "1"
    ds.StudyDescription, ds.SeriesDescription = "Dermoscopy", "Lesion images"
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber, ds.ImageLaterality = "DMS", 1, 1, "U"
    region = Dataset()
    region.CodeValue, region.CodingSchemeDesignator, region.CodeMeaning = "39937001", "SCT", "Skin structure"
    ds.AnatomicRegionSequence = [region]
    pixels = lesion_image(random_spec(np.random.default_rng(SUSPICIOUS_SEED), 256, True), 256, seed=SUSPICIOUS_SEED)
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.SamplesPerPixel, ds.PlanarConfiguration, ds.PhotometricInterpretation = 3, 0, "RGB"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelSpacing = [0.05, 0.05]
    ds.PixelData = pixels.tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds
