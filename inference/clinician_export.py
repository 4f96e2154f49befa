"""A signed-off case exported to DICOM (``clinician_sr``): when a DiagnosticReport becomes ``final``,
``amended`` or ``corrected`` with a Practitioner in ``resultsInterpreter`` (the review workflow's ``$complete``
or a client's sign-off, ``fhir_server.report_sign_off``), the clinician's decision per lesion is stored as a
verified SR in each study of the case, with a Key Object Selection of the key images (title "Of Interest",
naming the SR too), as new series (``dicom_node.derived``: durable, indexed, found by
C-FIND/QIDO-RS, retrieved by C-GET/C-MOVE/WADO-RS) and listed in the study's ImagingStudy, which the report's
``imagingStudy`` names. An outbox consumer of ``resource.updated``: retried by the dispatcher, idempotent
(the SR's UID derives from what was signed: the same signing stores nothing twice, a new one a new SR).

What the clinician decided, per lesion, is read from the report's clinician Observations (the reviewer's
SNOMED CT diagnosis, ``focus`` the lesion): a copy of an AI result (``derivedFrom`` an AI Observation) is a
confirmation; otherwise the clinician's own diagnosis, compared with the AI's predicted diagnosis of the same
lesion (an override that disagrees, or one that agrees). The AI's SRs of the lesion (the
``urn:dermbridge:dicom-sr`` extension of its results) and its images (``derivedFrom`` Media) are referenced.
"""

from __future__ import annotations

import hashlib
import logging
from functools import partial
from typing import Any

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from dicom_node.attributes import INSTANCE, STUDY
from dicom_node.blobs import BlobStore
from dicom_node.derived import StudyHome, UidTaken, store_derived
from dicom_node.errors import InvalidInstance
from dicom_node.forwarding.events import CLINICIAN_DECISIONS, DerivedOrigin
from dicom_node.instance_files import InstanceFiles
from dicom_node.sop_classes import AI_RESULT_CLASSES
from fhir_server.audit.events import DCM, ENTITY_TYPE
from fhir_server.audit.trail import AuditTrail
from fhir_server.outbox import Subscription
from fhir_server.repository import Repository
from fhir_server.storage.port import Engine, OutboxEvent, Record, TenantStore, TenantTransaction
from fhir_server.storage.query import FieldMatch, RecordQuery
from inference.clinician_sr import (
    CONFIRMED,
    NO_AI,
    OVERRODE,
    OWN_DEMO,
    OWN_SAME,
    Instance,
    LesionDecision,
    SignOff,
    build_key_images,
    build_sign_off_report,
)
from inference.dicom_results import DICOM_SR_EXTENSION
from inference.events import analysis_event

log = logging.getLogger(__name__)
CLINICIAN_DECISION = DerivedOrigin(CLINICIAN_DECISIONS)  # what forwarding rules match these objects by
TOPIC = "resource.updated"
SIGNED = frozenset({"final", "amended", "corrected"})
SNOMED = "http://snomed.info/sct"
DIAGNOSIS = "439401001"
DEMONSTRATION = ("urn:dermbridge:ai-use", "demonstration")
URGENCY_CODE = "referral-urgency"
LATERALITY = {"7771000": codes.cid244.Left, "24028007": codes.cid244.Right, "51440002": codes.cid244.Bilateral}
REASON = "DICOM export of a signed-off report"
MAX_RESULTS = 200
TITLE = "Clinician review: signed-off diagnosis"
KEY_IMAGES = "Clinician review: key images"
SUBTYPE = {"system": "urn:dermbridge:audit", "code": "sign-off-dicom", "display": "Signed-off report as DICOM"}


def _snomed(concept: Any) -> hd.sr.CodedConcept | None:
    for coding in (concept or {}).get("coding") or [] if isinstance(concept, dict) else []:
        if coding.get("system") == SNOMED and coding.get("code"):
            meaning = str(coding.get("display") or concept.get("text") or coding["code"])[:64]
            return hd.sr.CodedConcept(str(coding["code"]), "SCT", meaning)
    return None


def _is_diagnosis(observation: dict[str, Any]) -> bool:
    return any(c.get("code") == DIAGNOSIS for c in (observation.get("code") or {}).get("coding") or [])


def _focus(observation: dict[str, Any]) -> str:
    return str(((observation.get("focus") or [{}])[0] or {}).get("reference") or "")


def _tagged_demo(observation: dict[str, Any]) -> bool:
    tags = (observation.get("meta") or {}).get("tag") or []
    return any((t.get("system"), t.get("code")) == DEMONSTRATION for t in tags if isinstance(t, dict))


def _person_name(practitioner: dict[str, Any] | None, fallback: str) -> str:
    """The Practitioner's name as a DICOM PN (Family^Given), else the reference's display."""
    for name in (practitioner or {}).get("name") or []:
        family, given = str(name.get("family") or "").replace("^", " "), " ".join(name.get("given") or [])
        if family or given:
            return f"{family}^{given.replace('^', ' ')}"[:64]
        if name.get("text"):
            return _one_component(str(name["text"]))
    return _one_component(fallback or "Unknown reviewer")


def _one_component(text: str) -> str:
    """A name as written, as one PN component (the trailing caret says so: PS3.5 6.2.1.2)."""
    return text.replace("^", " ").strip()[:63] + "^"


def _site(body: dict[str, Any] | None) -> hd.sr.FindingSite | None:
    site = _snomed((body or {}).get("location"))
    if site is None:
        return None
    sides = [_snomed(q) for q in (body or {}).get("locationQualifier") or []]
    laterality = next((LATERALITY[s.value] for s in sides if s is not None and s.value in LATERALITY), None)
    return hd.sr.FindingSite(site, laterality=laterality)


def _content_key(report: dict[str, Any], lesions: list[LesionDecision]) -> str:
    """What was signed: a new signing (status, signer, conclusion, decisions) is a new SR; a re-delivery, or a
    later system write that changes none of it, is not."""
    parts = [str(report.get("status")), str(report.get("resultsInterpreter")), str(report.get("conclusion"))]
    parts += sorted(f"{d.lesion_key}:{d.diagnosis.value}:{d.decision.value}" for d in lesions)
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


class SignOffExport:
    """The outbox consumer; ``engine`` and ``blobs`` are the node's."""

    def __init__(self, engine: Engine, blobs: BlobStore, audit: AuditTrail | None, server_version: str = "") -> None:
        self.engine, self.blobs, self.audit, self.server_version = engine, blobs, audit, server_version
        self.files = InstanceFiles(blobs)

    def subscription(self) -> Subscription:
        return Subscription("dicom-sign-off", (TOPIC,), self.handle)

    async def handle(self, tenant: str, event: OutboxEvent) -> None:
        if event.payload.get("type") != "DiagnosticReport":
            return
        store = await self.engine.tenant(tenant)
        repo = Repository.system(store, reason=REASON)
        report = await repo.current("DiagnosticReport", str(event.payload.get("id")))
        signer = _signer(report)
        if report is None or report.get("status") not in SIGNED or signer is None:
            return
        try:
            await self.export(store, repo, report, signer)
        except (UidTaken, InvalidInstance, ValueError, TypeError) as exc:  # would fail again: recorded, not retried
            log.exception("the signed-off report %s was not exported to DICOM", report["id"])
            await self._record_failure(store, report, f"{type(exc).__name__}: {exc}"[:500])

    async def export(self, store: TenantStore, repo: Repository, report: dict[str, Any], signer: str) -> int:
        """The SR of the signed-off ``report`` in each of its studies on record; how many were stored."""
        lesions = await self._decisions(store, repo, report)
        practitioner = await repo.current("Practitioner", signer.split("/", 1)[1])
        display = str(next(r.get("display", "") for r in report["resultsInterpreter"] if r.get("reference") == signer))
        sign_off = SignOff(
            report_id=str(report["id"]),
            content_key=_content_key(report, lesions),
            reviewer=_person_name(practitioner, display),
            organization=store.name,
            signed_at=str(report.get("issued") or (report.get("meta") or {}).get("lastUpdated") or ""),
            conclusion=str(report.get("conclusion") or ""),
            lesions=tuple(lesions),
        )
        patient = str((report.get("subject") or {}).get("reference", "")).removeprefix("Patient/")
        stored = 0
        for imaging_study, study_uid in await _studies(repo, report) if patient else []:
            source = await self._source(store, study_uid, lesions)
            if source is None:
                continue
            decided = _in_study(sign_off, study_uid)
            sr = build_sign_off_report(source, decided, self.server_version)
            kos = build_key_images(source, decided, sr)
            home = StudyHome(patient, imaging_study, str(report["id"]))
            for made, title in ((sr, TITLE), (kos, KEY_IMAGES)):
                if made is not None:
                    audit = partial(self._recorded, store, _audit_event(report, home.patient_id, made))
                    stored += await store_derived(
                        store, self.blobs, made, home, title=title, audit=audit, origin=CLINICIAN_DECISION
                    )  # for the tenant's forwarding rules
        return stored

    async def _record_failure(self, store: TenantStore, report: dict[str, Any], reason: str) -> None:
        if self.audit is None:
            return
        patient = str((report.get("subject") or {}).get("reference", "")).removeprefix("Patient/")
        event = analysis_event(patient, "", "8", f"DiagnosticReport/{report['id']} not exported to DICOM: {reason}")
        event["subtype"] = [SUBTYPE]
        event["entity"][0] = _report_entity(report)
        async with store.transaction() as tx:
            await self.audit.record_in(store, tx, event)

    async def _recorded(self, store: TenantStore, event: dict[str, Any], tx: TenantTransaction) -> None:
        if self.audit is not None:
            await self.audit.record_in(store, tx, event)

    async def _decisions(self, store: TenantStore, repo: Repository, report: dict[str, Any]) -> list[LesionDecision]:
        results = [
            found
            for item in (report.get("result") or [])[:MAX_RESULTS]
            if str(item.get("reference", "")).startswith("Observation/")
            and (found := await repo.current("Observation", str(item["reference"]).split("/", 1)[1])) is not None
        ]
        ai = [o for o in results if "device" in o]
        decisions = []
        for observation in results:
            diagnosis = _snomed(observation.get("valueCodeableConcept"))
            if "device" in observation or not _is_diagnosis(observation) or diagnosis is None:
                continue
            lesion = _focus(observation)
            of_lesion = [o for o in ai if _focus(o) == lesion]
            decisions.append(await self._decision(store, repo, observation, diagnosis, lesion, of_lesion))
        return decisions

    async def _decision(
        self,
        store: TenantStore,
        repo: Repository,
        observation: dict[str, Any],
        diagnosis: hd.sr.CodedConcept,
        lesion: str,
        ai: list[dict[str, Any]],
    ) -> LesionDecision:
        copied = any(
            str(d.get("reference", "")).startswith("Observation/") for d in observation.get("derivedFrom") or []
        )
        ai_codes = {c.value for o in ai if _is_diagnosis(o) and (c := _snomed(o.get("valueCodeableConcept")))}
        decision = _decided(copied, ai, diagnosis.value in ai_codes)
        body = (
            await repo.current("BodyStructure", lesion.split("/", 1)[1])
            if lesion.startswith("BodyStructure/")
            else None
        )
        where = str(((body or {}).get("location") or {}).get("text") or "site not recorded")
        urgency = next(
            (
                str(c["valueCodeableConcept"]["coding"][0].get("code", ""))
                for c in observation.get("component") or []
                if any(x.get("code") == URGENCY_CODE for x in c.get("code", {}).get("coding", []))
            ),
            "",
        )
        return LesionDecision(
            lesion_key=lesion.split("/", 1)[-1] or str(observation["id"]),
            label=f"Lesion at {where}" + (f" ({lesion})" if lesion else ""),
            diagnosis=diagnosis,
            decision=decision,
            site=_site(body),
            urgency=urgency,
            note=" ".join(str(n.get("text", "")) for n in observation.get("note") or [] if not copied)[:500],
            demonstration=any(_tagged_demo(o) for o in ai),
            ai_reports=tuple(await _instances(store, _sr_uids(ai))),
            images=tuple(await _instances(store, await _image_uids(repo, ai))),
        )

    async def _source(self, store: TenantStore, study_uid: str, lesions: list[LesionDecision]) -> Any:
        """An image of the study, read whole: its patient and study attributes head the SR."""
        keys = [i.sop_instance for lesion in lesions for i in lesion.images if i.study == study_uid]
        records = [r for k in keys if (r := await store.get_record(INSTANCE, k)) is not None]
        if not records:
            query = RecordQuery(INSTANCE, (FieldMatch("StudyInstanceUID", "eq", (study_uid,)),), limit=50)
            records = [
                r
                for r in await store.find_records(query)
                if str((r.fields.get("SOPClassUID") or ("",))[0]) not in AI_RESULT_CLASSES
            ]
        if not records or await store.get_record(STUDY, study_uid) is None:
            return None
        return await self.files.read_dataset(store, store.name, records[0])


def _decided(copied: bool, ai: list[dict[str, Any]], same_as_ai: bool) -> hd.sr.CodedConcept:
    """Confirmed (a copy of an AI result), else the clinician's own diagnosis: with no AI result, beside a
    demonstration model's output (never a diagnosis to agree or disagree with), the same as the AI's, or not."""
    if copied:
        return CONFIRMED
    if not ai:
        return NO_AI
    if any(_tagged_demo(o) for o in ai):
        return OWN_DEMO
    return OWN_SAME if same_as_ai else OVERRODE


def _signer(report: dict[str, Any] | None) -> str | None:
    for reference in (report or {}).get("resultsInterpreter") or []:
        text = str((reference or {}).get("reference", ""))
        if text.startswith("Practitioner/"):
            return text
    return None


def _in_study(sign_off: SignOff, study_uid: str) -> SignOff:
    """The decisions of the lesions imaged in this study (all of them when none has an image on record)."""
    imaged = [d for d in sign_off.lesions if any(i.study == study_uid for i in d.images)]
    if imaged or any(d.images for d in sign_off.lesions):
        return SignOff(**{**{f: getattr(sign_off, f) for f in sign_off.__dataclass_fields__}, "lesions": tuple(imaged)})
    return sign_off


def _sr_uids(ai: list[dict[str, Any]]) -> list[str]:
    uids = {
        str(e["valueIdentifier"]["value"]).removeprefix("urn:oid:")
        for o in ai
        for e in o.get("extension") or []
        if e.get("url") == DICOM_SR_EXTENSION and "valueIdentifier" in e
    }
    return sorted(uids)


async def _image_uids(repo: Repository, ai: list[dict[str, Any]]) -> list[str]:
    media = {
        str(d.get("reference"))
        for o in ai
        for d in o.get("derivedFrom") or []
        if str(d.get("reference", "")).startswith("Media/")
    }
    uids = []
    for reference in sorted(media):
        found = await repo.current("Media", reference.split("/", 1)[1])
        uids += [
            str(i["value"]).removeprefix("urn:oid:")
            for i in (found or {}).get("identifier") or []
            if i.get("system") == "urn:dicom:uid"
        ]
    return uids


async def _instances(store: TenantStore, uids: list[str]) -> list[Instance]:
    found = []
    for uid in uids:
        record = await store.get_record(INSTANCE, uid)
        if record is not None:
            study, series, sop_class = (
                _field(record, k) for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID")
            )
            found.append(Instance(study, series, sop_class, uid))
    return found


def _field(record: Record, keyword: str) -> str:
    return str((record.fields.get(keyword) or ("",))[0])


async def _studies(repo: Repository, report: dict[str, Any]) -> list[tuple[str, str]]:
    """The case's ImagingStudies (id, Study Instance UID)."""
    found = []
    for reference in report.get("imagingStudy") or []:
        text = str(reference.get("reference", ""))
        if text.startswith("ImagingStudy/") and (study := await repo.current("ImagingStudy", text.split("/", 1)[1])):
            uid = next(
                (
                    str(i["value"]).removeprefix("urn:oid:")
                    for i in study.get("identifier") or []
                    if i.get("system") == "urn:dicom:uid"
                ),
                None,
            )
            if uid:
                found.append((text.split("/", 1)[1], uid))
    return found


def _audit_event(report: dict[str, Any], patient: str, made: Dataset) -> dict[str, Any]:
    """DICOM "DICOM Instances Accessed" (110103), action Create: the server made the signed-off SR (or KOS)."""
    what = f"{made.Modality} {made.SOPInstanceUID}"
    event = analysis_event(patient, "", "0", f"signed-off DiagnosticReport/{report['id']} stored as DICOM {what}")
    event["type"] = {"system": DCM, "code": "110103", "display": "DICOM Instances Accessed"}
    event["subtype"] = [SUBTYPE]
    event["action"] = "C"
    event["entity"][0] = _report_entity(report)
    return event


def _report_entity(report: dict[str, Any]) -> dict[str, Any]:
    return {"what": {"reference": f"DiagnosticReport/{report['id']}"}, "type": {"system": ENTITY_TYPE, "code": "2"}}
