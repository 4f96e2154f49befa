"""The inference worker end to end: dcmtk's storescu sends a dermoscopic image, and the case gets
Observations, a Provenance and a saliency Media, readable through FHIR search; and every path where
no results are written (no consent, poison image, failures, redelivery) ends recorded."""

from __future__ import annotations

import base64
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit

from dicom_node.sop_classes import SECONDARY_CAPTURE, VL_MICROSCOPIC
from fhir_server.validation import validate
from inference.results import AIAST
from inference.synthetic import lesion_image, random_spec
from inference.synthetic_scenes import blurred, document_page, he_tile, over_exposed
from inference.worker import CONSUMER
from tests.conftest import BASE, ENGINES, FhirTestClient, engine_settings, make_client
from tests.dicom_factories import dermoscopic, stow_body, with_pixels
from tests.fhir_server.test_consent import AI, consent

pytestmark = pytest.mark.interop
SALIENCY = "urn:dermbridge:media|saliency-map"
DEADLINE = 60.0


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Image to findings end to end runs on every engine (modules importing ``node`` stay on SQLite)."""
    return engine_settings(request)


@pytest.fixture
def node(tmp_path: Path, engine: dict[str, Any]) -> Iterator[FhirTestClient]:
    settings = {"inference_enabled": True, "dicom_any_ae_tenant": "default", **engine}
    with make_client(tmp_path / "var", **settings) as client:
        yield client


def dimse_port(client: FhirTestClient) -> int:
    return int(client.app.state.dimse.ports[0])  # type: ignore[attr-defined]


def lesion_instance(patient_id: str, seed: int, suspicious: bool = True, **kw: Any) -> pydicom.Dataset:
    ds = dermoscopic(patient_id=patient_id, seed=seed, **kw)
    pixels = lesion_image(random_spec(np.random.default_rng(seed), 256, suspicious), 256, seed=seed)
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.PixelData = pixels.tobytes()
    ds.PixelSpacing = [0.05, 0.05]
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def send(client: FhirTestClient, tmp_path: Path, *datasets: pydicom.Dataset) -> None:
    files = []
    for n, ds in enumerate(datasets):
        path = tmp_path / f"send-{ds.SOPInstanceUID}-{n}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(str(path))
    command = ["storescu", "-R", "-aet", "DERMATOSCOPE", "-aec", "DERMBRIDGE", "127.0.0.1", str(dimse_port(client))]
    result = subprocess.run([*command, *files], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def consenting_patient(client: FhirTestClient, mrn: str, permit: bool = True) -> str:
    body = {"resourceType": "Patient", "identifier": [{"system": "urn:clinic:mrn", "value": mrn}]}
    patient_id = str(client.post(f"{BASE}/Patient", json=body).json()["id"])
    provision = {"type": "permit" if permit else "deny", "purpose": [AI]}
    assert client.post(f"{BASE}/Consent", json=consent(patient_id, provision)).status_code == 201
    return patient_id


def wait_for(client: FhirTestClient, url: str, params: dict[str, str], count: int = 1) -> list[dict[str, Any]]:
    deadline = time.monotonic() + DEADLINE
    while True:
        bundle = client.get(f"{BASE}/{url}", params={**params, "_count": "100"}).json()
        found = [e["resource"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]
        if len(found) >= count:
            return found
        assert time.monotonic() < deadline, f"nothing at {url} {params} after {DEADLINE} s"
        time.sleep(0.1)


def test_storescu_image_becomes_findings(node: FhirTestClient, tmp_path: Path) -> None:
    patient_id = consenting_patient(node, "AI-1")
    send(node, tmp_path, lesion_instance("AI-1", seed=11))
    device = wait_for(node, "Device", {"identifier": "urn:dermbridge:model|dermbridge-demo-abcd@1.0.0"})[0]
    findings = wait_for(node, "Observation", {"subject": f"Patient/{patient_id}", "device": f"Device/{device['id']}"},
                        2)  # fmt: skip
    classes = [o for o in findings if o["code"]["coding"][0]["system"] == "urn:dermbridge:ai-risk"]
    assert {o["code"]["coding"][0]["code"] for o in classes} == {"probability-of-400096001", "probability-of-93655004"}
    for observation in classes:
        assert observation["status"] == "preliminary"
        assert observation["meta"]["security"][0]["code"] == "AIAST"
        assert observation["category"][0]["coding"][0]["code"] == "imaging"
        assert 0 <= observation["valueQuantity"]["value"] <= 1
        assert observation["bodySite"]["coding"][0]["code"] == "39937001"
        assert observation["focus"][0]["reference"].startswith("BodyStructure/")
        assert {r["reference"].split("/")[0] for r in observation["derivedFrom"]} == {"ImagingStudy", "Media"}
    assert sum(o["valueQuantity"]["value"] for o in classes) == pytest.approx(1, abs=1e-4)
    abcd = wait_for(
        node, "Observation", {"subject": f"Patient/{patient_id}", "code": "urn:dermbridge:abcd|abc-partial"}
    )[0]
    parts = {c["code"]["coding"][0]["code"]: c for c in abcd["component"]}
    assert 0 <= parts["A"]["valueInteger"] <= 2 and 0 <= parts["B"]["valueInteger"] <= 8
    assert 1 <= parts["C"]["valueInteger"] <= 6
    assert parts["D"]["dataAbsentReason"]["coding"][0]["code"] == "unsupported"  # D is not assessed
    assert "tds-range" in parts and "tds" not in parts  # never a Total Dermoscopy Score without D
    assert parts["diameter"]["valueQuantity"]["unit"] == "mm" and 2 < parts["diameter"]["valueQuantity"]["value"] < 12
    assert abcd["focus"][0]["reference"] == classes[0]["focus"][0]["reference"]  # the same lesion
    rule_device = node.get(f"{BASE}/{abcd['device']['reference']}").json()
    assert rule_device["id"] != device["id"] and "Rule-based" in rule_device["type"]["text"]
    rule_provenance = wait_for(node, "Provenance", {"target": f"Observation/{abcd['id']}"})[0]
    assert rule_provenance["agent"][0]["who"]["reference"] == abcd["device"]["reference"]

    provenance = wait_for(node, "Provenance", {"target": f"Observation/{classes[0]['id']}"})[0]
    assert provenance["agent"][0]["who"]["reference"] == f"Device/{device['id']}"
    assert provenance["entity"][0]["role"] == "derivation"

    report = wait_for(node, "DiagnosticReport", {"subject": f"Patient/{patient_id}"})[0]
    assert report["status"] == "preliminary"
    assert {r["reference"] for r in report["result"]} >= {f"Observation/{o['id']}" for o in (*classes, abcd)}
    assert report["conclusion"].startswith("DEMONSTRATION ONLY, NOT A DIAGNOSIS")  # the demo model
    assert "conclusionCode" not in report
    maps = wait_for(node, "Media", {"subject": f"Patient/{patient_id}", "modality": SALIENCY})
    assert len(maps) == 1  # the saliency map of the top finding
    saliency = maps[0]
    assert saliency["partOf"] == [{"reference": classes[0]["derivedFrom"][1]["reference"]}]  # of the image
    top = max(classes, key=lambda o: o["valueQuantity"]["value"])
    assert saliency["content"]["contentType"] == "image/png"
    assert top["code"]["coding"][0]["display"].lower() in saliency["reasonCode"][0]["text"].lower()
    assert "coding" not in saliency["reasonCode"][0]  # the finding it explains, never a disease code
    url = saliency["content"]["url"]
    binary = node.get(f"{BASE}/{url}", headers={"Accept": "application/fhir+json"}).json()
    assert binary["contentType"] == "image/png"
    assert binary["securityContext"]["reference"] == f"Media/{saliency['id']}"
    raw = node.get(f"{BASE}/{url}", headers={"Accept": "image/png"})  # binary.html: the content itself
    assert raw.status_code == 200 and raw.headers["content-type"] == "image/png"
    assert raw.content.startswith(b"\x89PNG") and raw.content == base64.b64decode(binary["data"])
    assert raw.headers["x-security-context"] == f"Media/{saliency['id']}"
    for observation in classes:  # derived from the images, not from the saliency map
        assert f"Media/{saliency['id']}" not in {r["reference"] for r in observation["derivedFrom"]}
    events = node.get(f"{BASE}/AuditEvent", params={"subtype": "ai-analysis"}).json()
    assert events["entry"][0]["resource"]["outcome"] == "0"
    # what the worker wrote passes the project's full validation, not only the R4 schema
    for resource in (*findings, abcd, provenance, rule_provenance, saliency, binary, device, rule_device, report):
        validate({k: v for k, v in resource.items() if k != "meta"} | {"meta": {"security": [AIAST]}})


def worker(client: FhirTestClient) -> Any:
    return client.app.state.inference  # type: ignore[attr-defined]


def test_redelivered_events_write_nothing_new(node: FhirTestClient, tmp_path: Path) -> None:
    patient_id = consenting_patient(node, "AI-2")
    send(node, tmp_path, lesion_instance("AI-2", seed=12))
    wait_for(node, "Media", {"subject": f"Patient/{patient_id}", "modality": SALIENCY})  # both steps committed
    first = wait_for(node, "Observation", {"subject": f"Patient/{patient_id}"}, 3)
    store = node.portal.call(node.app.state.engine.tenant, "default")  # type: ignore[attr-defined]

    async def replay() -> None:
        events = await store.claim_events("replay-reader", 1000, 60)
        stored = [e for e in events if e.topic == "imaging.instance-stored"]
        async with store.transaction() as tx:
            for event in stored:
                await tx.append_event(event.topic, event.payload)

    node.portal.call(replay)
    node.portal.call(worker(node).drain)
    again = node.get(f"{BASE}/Observation", params={"subject": f"Patient/{patient_id}"}).json()
    assert again["total"] == len(first)
    maps = node.get(f"{BASE}/Media", params={"subject": f"Patient/{patient_id}", "modality": SALIENCY}).json()
    assert maps["total"] == 1


def test_no_consent_no_analysis_and_a_human_review(node: FhirTestClient, tmp_path: Path) -> None:
    refused = consenting_patient(node, "AI-3", permit=False)
    send(node, tmp_path, lesion_instance("AI-3", seed=13, accession="ACC-3"))
    task = wait_for(node, "Task", {"patient": f"Patient/{refused}", "status": "requested"})[0]
    assert task["code"]["coding"][0]["code"] == "clinician-review"
    assert "Consent/" in task["reasonCode"]["text"]  # the review Task the case's workflow opened
    assert node.get(f"{BASE}/Observation", params={"subject": f"Patient/{refused}"}).json()["total"] == 0
    audit = node.get(f"{BASE}/AuditEvent", params={"subtype": "ai-analysis", "outcome": "4"}).json()
    assert audit["total"] == 1
    # no Consent at all: the same
    send(node, tmp_path, lesion_instance("AI-4", seed=14, accession="ACC-4"))
    wait_for(node, "Task", {"status": "requested"}, 2)


def test_poison_image_is_a_recorded_failure(node: FhirTestClient, tmp_path: Path) -> None:
    patient_id = consenting_patient(node, "AI-5")
    broken = dermoscopic(patient_id="AI-5", syntax=JPEGBaseline8Bit, accession="ACC-5")
    broken.PixelData = pydicom.encaps.encapsulate([b"\xff\xd8not a jpeg\xff\xd9"])
    body, media = stow_body(broken)
    assert node.post("/dicomweb/default/studies", content=body, headers={"Content-Type": media}).status_code == 200
    failure = {"patient": f"Patient/{patient_id}", "status": "failed", "code": "urn:dermbridge:task|ai-analysis"}
    task = wait_for(node, "Task", failure)[0]  # the worker's record (the workflow's AI step says failed too)
    outcome = node.get(f"{BASE}/{task['output'][0]['valueReference']['reference']}").json()
    assert "cannot be decoded" in outcome["issue"][0]["diagnostics"]
    assert task["focus"]["reference"].startswith("DiagnosticReport/")
    # the queue moves on: the next image of the same patient is analysed
    send(node, tmp_path, lesion_instance("AI-5", seed=15, accession="ACC-5"))
    wait_for(node, "Observation", {"subject": f"Patient/{patient_id}"}, 3)


def test_transient_failures_are_retried_then_recorded(tmp_path: Path) -> None:
    settings = {"inference_enabled": True, "dicom_any_ae_tenant": "default"}
    with make_client(tmp_path / "var", **settings) as node:
        running = worker(node)
        node.portal.call(running.stop)  # drive it by hand
        running.lease, running.max_attempts = 0.05, 3
        calls = {"n": 0}
        original = running.runners[0].predict

        def flaky(images: list[np.ndarray]) -> Any:
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("GPU fell off the bus")
            return original(images)

        running.runners[0].predict = flaky
        patient_id = consenting_patient(node, "AI-6")
        send(node, tmp_path, lesion_instance("AI-6", seed=16))
        node.portal.call(running.drain)
        assert node.get(f"{BASE}/Observation", params={"subject": f"Patient/{patient_id}"}).json()["total"] == 0
        time.sleep(0.1)  # the lease expires: the event comes back
        node.portal.call(running.drain)
        assert node.get(f"{BASE}/Observation", params={"subject": f"Patient/{patient_id}"}).json()["total"] == 4

        running.runners[0].predict = lambda images: (_ for _ in ()).throw(RuntimeError("still broken"))
        other = consenting_patient(node, "AI-7")
        send(node, tmp_path, lesion_instance("AI-7", seed=17, accession="ACC-7"))
        for _ in range(4):  # back-off 0.05 s, then 0.1 s, then the failure is recorded
            node.portal.call(running.drain)
            time.sleep(0.3)
        worker_record = {"patient": f"Patient/{other}", "status": "failed", "code": "urn:dermbridge:task|ai-analysis"}
        failed = node.get(f"{BASE}/Task", params=worker_record).json()  # (the workflow's AI step failed too)
        assert failed["total"] == 1
        store = node.portal.call(node.app.state.engine.tenant, "default")  # type: ignore[attr-defined]
        assert node.portal.call(store.claim_events, CONSUMER, 10, 60) == []  # nothing stuck


def test_a_clinicians_final_report_is_never_overwritten(node: FhirTestClient, tmp_path: Path) -> None:
    patient_id = consenting_patient(node, "AI-8")
    first = lesion_instance("AI-8", seed=18, accession="ACC-8")
    send(node, tmp_path, first)
    report = wait_for(node, "DiagnosticReport", {"subject": f"Patient/{patient_id}", "status": "preliminary"})[0]
    final = {
        **report,
        "status": "final",
        "conclusion": "Benign naevus on dermoscopy (Dr Example)",
        "resultsInterpreter": [{"reference": f"Practitioner/{practitioner(node)}"}],
    }
    final.pop("meta")
    assert node.put(f"{BASE}/DiagnosticReport/{report['id']}", json=final).status_code == 200
    second = lesion_instance("AI-8", seed=19, accession="ACC-8", study_uid=first.StudyInstanceUID,
                             series_uid=first.SeriesInstanceUID)  # fmt: skip
    send(node, tmp_path, second)
    wait_for(node, "DiagnosticReport", {"subject": f"Patient/{patient_id}", "status": "appended"})
    kept = node.get(f"{BASE}/DiagnosticReport/{report['id']}").json()
    assert kept["status"] == "appended" and kept["conclusion"].endswith("(Dr Example)")


def own_case(mrn: str, **kw: Any) -> pydicom.Dataset:
    return dermoscopic(patient_id=mrn, accession=f"ACC-{mrn}", **kw)


def practitioner(client: FhirTestClient) -> str:
    """A clinician who signs reports off (resultsInterpreter)."""
    body = {"resourceType": "Practitioner", "name": [{"family": "Example", "prefix": ["Dr"]}]}
    return str(client.post(f"{BASE}/Practitioner", json=body).json()["id"])


UNSUITABLE = "urn:dermbridge:image-admission|unsuitable-image"


def unsuitable_images() -> dict[str, tuple[pydicom.Dataset, str]]:
    """Each image a dermoscopy model once scored "Malignant melanoma, POS, p=1.00", and the reason it must not.
    Each is a case of its own (its own accession): the workflow opens one review per case."""
    lesion = lesion_image(random_spec(np.random.default_rng(30), 256, True), 256, seed=30)
    return {
        "U-1": (with_pixels(own_case("U-1", sop_class=VL_MICROSCOPIC), he_tile(256), modality="GM"),
                "sop-class"),
        "U-2": (with_pixels(own_case("U-2", sop_class=SECONDARY_CAPTURE), document_page(512),
                            modality="DOC", grey=True), "sop-class"),
        "U-3": (with_pixels(own_case("U-3"), he_tile(256)), "no-skin"),  # H&E sent as dermoscopy
        "U-4": (with_pixels(own_case("U-4"), blurred(lesion)), "blurred"),
        "U-5": (with_pixels(own_case("U-5"), over_exposed(lesion)), "over-exposed"),
        "U-6": (thumb_nail(with_pixels(own_case("U-6"), lesion)), "body-region"),  # a nail unit
    }  # fmt: skip


def thumb_nail(ds: pydicom.Dataset) -> pydicom.Dataset:
    """Coded Nail unit of thumb (CID 4029): within the demo card's contraindicated nail unit."""
    ds.AnatomicRegionSequence[0].CodeValue, ds.AnatomicRegionSequence[0].CodeMeaning = "770810008", "Nail unit of thumb"
    return ds


def test_unsuitable_images_are_not_scored(node: FhirTestClient, tmp_path: Path) -> None:
    images = unsuitable_images()
    patients = {mrn: consenting_patient(node, mrn) for mrn in images}
    send(node, tmp_path, *(ds for ds, _ in images.values()))
    for mrn, (_, reason) in images.items():
        tasks = wait_for(node, "Task", {"patient": f"Patient/{patients[mrn]}", "business-status": UNSUITABLE})
        assert len(tasks) == 1, mrn  # one record per refused image, with the coded reasons
        task = tasks[0]  # the review of the case is the workflow's (below), so this one is the AI step's record
        assert task["status"] == "rejected" and task["code"]["coding"][0]["code"] == "ai-analysis"
        reasons = {c["code"] for c in task["statusReason"]["coding"]}
        assert reason in reasons, (mrn, reasons)
        assert all(o["valueCodeableConcept"]["coding"][0]["system"] == "urn:dermbridge:image-admission"
                   for o in task["output"])  # fmt: skip
        assert task["focus"]["reference"].startswith("DiagnosticReport/")
        review = wait_for(node, "Task", {"patient": f"Patient/{patients[mrn]}", "status": "requested"})[0]
        assert "image unsuitable" in review["reasonCode"]["text"]
        observations = node.get(f"{BASE}/Observation", params={"subject": f"Patient/{patients[mrn]}"}).json()
        assert observations["total"] == 0, mrn  # no score at all
        report = node.get(f"{BASE}/{task['focus']['reference']}").json()
        assert "conclusion" not in report and "conclusionCode" not in report
        validate({k: v for k, v in task.items() if k != "meta"})


def test_an_event_naming_another_patient_than_the_images_is_not_analysed(node: FhirTestClient, tmp_path: Path) -> None:
    """Pentest 3, finding 1: a re-emitted event naming patient A with patient B's image (B refused consent) had
    B's image analysed under A's Consent and filed in A's chart. The index record says whose the image is."""
    consenting = consenting_patient(node, "AI-MIS-A")
    refusing = consenting_patient(node, "AI-MIS-B", permit=False)
    send(node, tmp_path, lesion_instance("AI-MIS-B", seed=17, accession="ACC-MIS-B"))
    wait_for(node, "Task", {"patient": f"Patient/{refusing}", "status": "requested"})  # settled: B refused
    store = node.portal.call(node.app.state.engine.tenant, "default")  # type: ignore[attr-defined]

    async def forge() -> None:
        events = await store.claim_events("forging-reader", 1000, 60)
        (image,) = [e for e in events if e.topic == "imaging.instance-stored" and e.payload["patient"] == refusing]
        async with store.transaction() as tx:
            await tx.append_event(image.topic, {**image.payload, "patient": consenting, "requeued": True})

    node.portal.call(forge)
    node.portal.call(worker(node).drain)
    audit = wait_for(node, "AuditEvent", {"subtype": "ai-analysis", "outcome": "8"})[0]
    assert "another patient" in str(audit)
    for patient in (consenting, refusing):
        assert node.get(f"{BASE}/Observation", params={"subject": f"Patient/{patient}"}).json()["total"] == 0
