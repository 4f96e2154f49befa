"""A signed-off case exported to DICOM (``clinician_sr``): when a DiagnosticReport becomes ``final``,
``amended`` or ``corrected`` with a Practitioner or PractitionerRole in ``resultsInterpreter`` (the review
workflow's ``$complete`` or a client's sign-off, ``fhir_server.report_sign_off``), the clinician's decision per
lesion is stored as a verified SR in each study of the case, with a Key Object Selection of the key images
(title "Of Interest", naming the SR too), as new series (``dicom_node.derived``: durable, indexed, found by
C-FIND/QIDO-RS, retrieved by C-GET/C-MOVE/WADO-RS) and listed in the study's ImagingStudy, which the report's
``imagingStudy`` names. An outbox consumer of ``resource.created``/``updated``: retried by the dispatcher,
idempotent (the SR's UID derives from what was signed: the same signing stores nothing twice, a new one a new SR). A
signed report that cannot be exported (no person to name as the verifier, no signing time, a malformed
resource) is recorded as not exported (AuditEvent, outcome 8, saying why), never skipped silently.

What the clinician decided, per lesion, is read from the report's clinician Observations (the reviewer's
SNOMED CT diagnosis, ``focus`` the lesion), compared with what the AI called for the same lesion (``_decided``):
a confirmation only for a copy of the AI's one positive call, a disagreement only with a positive call, else
neutral (no call, equivocal, differing AI results, a demonstration model). The AI's SRs of the lesion (the
``urn:dermbridge:dicom-sr`` extension of its results) and its images (``derivedFrom`` Media) are referenced.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from datetime import UTC, datetime
from functools import partial
from typing import Any

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from dicom_node.attributes import INSTANCE, STUDY
from dicom_node.blobs import BlobStore
from dicom_node.derived import StudyHome, UidTaken, store_derived
from dicom_node.dicom_values import GROUPS, representation
from dicom_node.errors import InvalidInstance
from dicom_node.forwarding.events import CLINICIAN_DECISIONS, DerivedOrigin
from dicom_node.instance_files import InstanceFiles
from dicom_node.sop_classes import AI_RESULT_CLASSES
from dicom_node.web.deletion import DicomDeletion
from fhir_server.audit.events import DCM, ENTITY_TYPE
from fhir_server.audit.trail import AuditTrail
from fhir_server.outbox import Subscription
from fhir_server.outcomes.codes import CATEGORY_OF, CONDITIONS
from fhir_server.repository import Repository
from fhir_server.storage.port import Engine, OutboxEvent, Record, TenantStore, TenantTransaction
from fhir_server.storage.query import FieldMatch, RecordQuery
from fhir_server.workflow.review.decision import URGENCY_CODE
from inference.clinician_sr import (
    AI_EQUIVOCAL,
    AI_MIXED,
    AI_NO_CALL,
    CONFIRMED,
    CONSISTENT,
    EQUIVOCAL,
    NO_AI,
    OVERRODE,
    OWN_DEMO,
    OWN_SAME,
    Instance,
    LesionDecision,
    SignOff,
    build_key_images,
    build_sign_off_report,
    key_images_series,
    sign_off_series,
    sign_off_uid,
)
from inference.dicom_results import DICOM_SR_EXTENSION
from inference.events import analysis_event
from inference.findings import DEMO_TAG, DIAGNOSIS
from inference.model_card import SNOMED

log = logging.getLogger(__name__)
CLINICIAN_DECISION = DerivedOrigin(CLINICIAN_DECISIONS)  # what forwarding rules match these objects by
TOPICS = ("resource.created", "resource.updated")  # a report may be created already signed
SIGNED = frozenset({"final", "amended", "corrected"})
WITHDRAWN = frozenset({"entered-in-error", "cancelled"})  # an Observation's status: not a result to export (M1)
DEMONSTRATION = (DEMO_TAG["system"], DEMO_TAG["code"])
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
    return any(c.get("code") == DIAGNOSIS["code"] for c in (observation.get("code") or {}).get("coding") or [])


def _focus(observation: dict[str, Any]) -> str:
    return str(((observation.get("focus") or [{}])[0] or {}).get("reference") or "")


def _tagged_demo(observation: dict[str, Any]) -> bool:
    tags = (observation.get("meta") or {}).get("tag") or []
    return any((t.get("system"), t.get("code")) == DEMONSTRATION for t in tags if isinstance(t, dict))


def _person_name(practitioner: dict[str, Any] | None, fallback: str) -> str:
    """The Practitioner's name as a DICOM PN (PS3.5 6.2.1.2: component groups alphabetic=ideographic=phonetic, each
    family^given^middle^prefix^suffix), the inverse of ``dicom_values.human_name``: each FHIR name fills the group
    its representation names (``dicom_values.representation``: a JP Core kanji name the ideographic group, its kana
    the phonetic, romaji the alphabetic), the ``official`` name first within a group; else the reference's display
    as one component. Written as text, never encoded here: the SR is UTF-8 (ISO_IR 192), so "Dvořák" and "山田"
    reach the PACS as written (derm review 5, H1)."""
    names = [n for n in (practitioner or {}).get("name") or [] if isinstance(n, dict)]
    names.sort(key=lambda n: n.get("use") != "official")
    groups: dict[str, str] = {}
    for name in names:
        group = _group(name)
        if group:
            groups.setdefault(representation(name), group)
    if not groups:
        return _one_component(fallback or "Unknown reviewer")
    return "=".join(groups.get(code, "") for code in GROUPS).rstrip("=")


def _group(name: dict[str, Any]) -> str:
    """One FHIR HumanName as one PN component group (at most 64 characters, PS3.5 6.2); "" when it has no name."""
    family, given = _part(name.get("family")), [_part(g) for g in name.get("given") or []]
    if family or any(given):
        parts = (
            family,
            given[0] if given else "",
            " ".join(given[1:]),
            " ".join(_part(p) for p in name.get("prefix") or []),
            " ".join(_part(p) for p in name.get("suffix") or []),
        )
        return "^".join(parts).rstrip("^")[:64]
    return _one_component(str(name["text"])) if name.get("text") else ""


def _part(value: Any) -> str:
    """A name part as one PN component: the delimiters ^ = and \\ (PS3.5 6.2) read as spaces."""
    return str(value or "").replace("^", " ").replace("=", " ").replace("\\", " ").strip()


def _one_component(text: str) -> str:
    """A name as written, as one PN component (the trailing caret says so: PS3.5 6.2.1.2)."""
    return _part(text)[:63] + "^"


def _urgency(observation: dict[str, Any]) -> str:
    """The referral urgency component's code (HL7 request-priority), or its text as written; "" when none. A
    component written over plain FHIR (``valueString``, no coding) is read, never a crash retried until the
    outbox dead-letters it (final review dicom.md 11)."""
    for component in observation.get("component") or []:
        codings = ((component or {}).get("code") or {}).get("coding") or [] if isinstance(component, dict) else []
        if not any(isinstance(c, dict) and c.get("code") == URGENCY_CODE["code"] for c in codings):
            continue
        value = component.get("valueCodeableConcept")
        if isinstance(value, dict):
            coded = (c.get("code") for c in value.get("coding") or [] if isinstance(c, dict) and c.get("code"))
            return str(next(coded, None) or value.get("text") or "")
        return str(component.get("valueString") or "")
    return ""


def _site(body: dict[str, Any] | None) -> hd.sr.FindingSite | None:
    site = _snomed((body or {}).get("location"))
    if site is None:
        return None
    sides = [_snomed(q) for q in (body or {}).get("locationQualifier") or []]
    laterality = next((LATERALITY[s.value] for s in sides if s is not None and s.value in LATERALITY), None)
    return hd.sr.FindingSite(site, laterality=laterality)


def _content_key(report: dict[str, Any], lesions: list[LesionDecision], left_out: list[str]) -> str:
    """What was signed: a new signing (status, signer, conclusion, decisions) is a new SR; a re-delivery, or a
    later system write that changes none of it, is not. An image or AI SR deleted since (derm review 4, M7) is
    a new SR too, superseding the one that referenced it."""
    parts = [str(report.get("status")), str(report.get("resultsInterpreter")), str(report.get("conclusion"))]
    parts += sorted(f"{d.lesion_key}:{d.diagnosis.value}:{d.decision.value}:{'|'.join(d.gone)}" for d in lesions)
    parts += left_out
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


class SignOffExport:
    """The outbox consumer; ``engine`` and ``blobs`` are the node's."""

    def __init__(self, engine: Engine, blobs: BlobStore, audit: AuditTrail | None, server_version: str = "") -> None:
        self.engine, self.blobs, self.audit, self.server_version = engine, blobs, audit, server_version
        self.files = InstanceFiles(blobs)

    def subscription(self) -> Subscription:
        return Subscription("dicom-sign-off", TOPICS, self.handle)

    async def handle(self, tenant: str, event: OutboxEvent) -> None:
        if event.payload.get("type") != "DiagnosticReport":
            return
        store = await self.engine.tenant(tenant)
        repo = Repository.system(store, reason=REASON)
        report = await repo.current("DiagnosticReport", str(event.payload.get("id")))
        if report is None or report.get("status") not in SIGNED or not report.get("resultsInterpreter"):
            return  # not signed by anyone: nothing of a clinician's to export
        try:
            await self.export(store, repo, report, await _signer(repo, report))
        except (UidTaken, InvalidInstance, ValueError, TypeError, KeyError, IndexError) as exc:
            # would fail again (a signer who cannot be resolved, a malformed resource): recorded, not retried
            log.exception("the signed-off report %s was not exported to DICOM", report["id"])
            await self._record_failure(store, report, f"{type(exc).__name__}: {exc}"[:500])

    async def export(self, store: TenantStore, repo: Repository, report: dict[str, Any], signer: Signer) -> int:
        """The SR of the signed-off ``report`` in each of its studies on record; how many were stored."""
        lesions, left_out, undecided = await self._decisions(store, repo, report)
        sign_off = SignOff(
            report_id=str(report["id"]),
            content_key=_content_key(report, lesions, [*left_out, *undecided]),
            signing_key=_content_key(
                report, [dataclasses.replace(d, gone=()) for d in lesions], [*left_out, *undecided]
            ),
            reviewer=signer.name,
            organization=signer.organization,
            signed_at=await _signed_at(repo, report, signer),
            conclusion=str(report.get("conclusion") or ""),
            lesions=tuple(lesions),
            status=str(report.get("status")),
            left_out=tuple(left_out),
            undecided=undecided,
        )
        patient = str((report.get("subject") or {}).get("reference", "")).removeprefix("Patient/")
        stored = 0
        for imaging_study, study_uid in await _studies(repo, report) if patient else []:
            source = await self._source(store, study_uid, lesions)
            if source is None:
                continue
            decided = await _versioned(store, _in_study(sign_off, study_uid), study_uid)
            sr = build_sign_off_report(source, decided, self.server_version)
            kos = build_key_images(source, decided, sr)
            home = StudyHome(patient, imaging_study, str(report["id"]))
            for made, title in ((sr, TITLE), (kos, KEY_IMAGES)):
                if made is not None:
                    audit = partial(self._recorded, store, _audit_event(report, home.patient_id, made))
                    stored += await store_derived(
                        store, self.blobs, made, home, title=title, audit=audit, origin=CLINICIAN_DECISION
                    )  # for the tenant's forwarding rules
            await self._retire_key_images(store, study_uid, decided, kos)
        return stored

    async def _retire_key_images(
        self, store: TenantStore, study_uid: str, sign_off: SignOff, current: Dataset | None
    ) -> None:
        """The report's earlier Key Object Selections in the study (those naming a superseded sign-off SR) are
        deleted like any DICOMweb DELETE (audited, FHIR brought up to date): a PACS user never opens a key-image
        note whose key image was deleted, or that points at a superseded report (derm review 4, M7 and H2). The
        earlier SRs stay, superseded through the Predecessor Documents Sequence; a KOS has none."""
        if not sign_off.previous:
            return
        superseded = {i.sop_instance for i in sign_off.previous}
        query = RecordQuery(INSTANCE, (FieldMatch("SeriesInstanceUID", "eq", (key_images_series(study_uid),)),))
        stale = []
        for record in await store.find_records(query):
            if current is not None and record.key == current.SOPInstanceUID:
                continue
            kos = await self.files.read_dataset(store, store.name, record)
            if superseded & _referenced(kos):
                stale.append(record)
        if stale:
            who = f"DermBridge sign-off export (DiagnosticReport/{sign_off.report_id} superseded)"
            await DicomDeletion(self.engine, self.blobs, self.audit).delete(store.name, stale, who, "")

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

    async def _decisions(
        self, store: TenantStore, repo: Repository, report: dict[str, Any]
    ) -> tuple[list[LesionDecision], list[str], tuple[str, ...]]:
        """The clinician's decisions per lesion, what of the signed report they leave out (derm review 4, M4:
        then the SR is PARTIAL and says what): a clinician's finding that is not a SNOMED CT diagnosis, a result
        not on record, results beyond ``MAX_RESULTS``, a lesion the AI called (positive or equivocal) with no
        clinician decision (derm review 5, H2); and, in words, each lesion of the report's AI results the
        clinician decided nothing on (``_undecided``)."""
        listed = [str((item or {}).get("reference", "")) for item in report.get("result") or []]
        extra = len(listed) - MAX_RESULTS
        left_out = [f"{extra} result(s) beyond the first {MAX_RESULTS}"] if extra > 0 else []
        results = []
        for reference in listed[:MAX_RESULTS]:
            id = reference.split("/")[1] if reference.startswith("Observation/") else ""
            if (found := await repo.current("Observation", id) if id else None) is None:
                left_out.append(f"the result {reference[:200]} (not on record)")
            else:
                results.append(found)
        every_ai = [o for o in results if "device" in o]  # a withdrawn one still says which image was deleted
        ai = [o for o in every_ai if o.get("status") not in WITHDRAWN]  # derm review 5, M1: undecided, no call
        own = [o for o in results if "device" not in o]
        current = [o for o in own if o.get("status") in SIGNED]
        said = [_withdrawn(o) for o in own if o.get("status") not in SIGNED]  # derm review 5, M1
        diagnoses: dict[str, list[tuple[dict[str, Any], hd.sr.CodedConcept]]] = {}
        for observation in current:
            diagnosis = _snomed(observation.get("valueCodeableConcept"))
            if not _is_diagnosis(observation) or diagnosis is None:
                what = str((observation.get("code") or {}).get("text") or "") or "a finding"
                left_out.append(f"the clinician's {what[:200]} (Observation/{observation['id']}): no coded diagnosis")
                continue
            diagnoses.setdefault(_focus(observation), []).append((observation, diagnosis))
        decisions = []
        for lesion, given in diagnoses.items():
            if len({d.value for _, d in given}) > 1:  # derm review 5, M1: neither is shown as the verified diagnosis
                left_out.append(await _contradictory(repo, lesion, given))
                continue
            observation, diagnosis = given[0]
            of_lesion = [o for o in every_ai if _focus(o) == lesion]
            decisions.append(await self._decision(store, repo, observation, diagnosis, lesion, of_lesion))
        addressed = {_focus(o) for o in current}
        undecided = [await _undecided(repo, lesion, ai) for lesion in sorted({_focus(o) for o in ai} - addressed)]
        left_out += [f"{label} (an AI call no clinician decided on)" for label, _, called in undecided if called]
        if left_out:
            left_out.append(f"see DiagnosticReport/{report['id']}")
        return decisions, left_out, (*(words for _, words, _ in undecided), *said)

    async def _decision(
        self,
        store: TenantStore,
        repo: Repository,
        observation: dict[str, Any],
        diagnosis: hd.sr.CodedConcept,
        lesion: str,
        ai: list[dict[str, Any]],
    ) -> LesionDecision:
        decision = _decided(observation, diagnosis, ai)
        copied = decision.value == CONFIRMED.value
        body, label = await _lesion(repo, lesion)
        image_uids, gone = await _image_uids(repo, ai)
        ai_reports, images = await _instances(store, _sr_uids(ai)), await _instances(store, image_uids)
        gone += [f"AI result SR {uid} no longer on record (deleted)" for uid in _missing(_sr_uids(ai), ai_reports)]
        gone += [f"image {uid} no longer on record (deleted)" for uid in _missing(image_uids, images)]
        return LesionDecision(
            lesion_key=lesion.split("/", 1)[-1] or str(observation["id"]),
            label=label,
            diagnosis=diagnosis,
            decision=decision,
            site=_site(body),
            urgency=_urgency(observation),
            note=" ".join(str(n.get("text", "")) for n in observation.get("note") or [] if not copied),
            demonstration=any(_tagged_demo(o) for o in ai),
            ai_reports=tuple(ai_reports),
            images=tuple(images),
            gone=tuple(gone),
        )

    async def _source(self, store: TenantStore, study_uid: str, lesions: list[LesionDecision]) -> Any:
        """An image of the study, read whole: its patient and study attributes head the SR; when its images are
        all deleted, another object of the study (an AI SR, an earlier sign-off), so that the re-issued SR says
        what was deleted (derm review 4, M7)."""
        keys = [i.sop_instance for lesion in lesions for i in lesion.images if i.study == study_uid]
        records = [r for k in keys if (r := await store.get_record(INSTANCE, k)) is not None]
        if not records:
            query = RecordQuery(INSTANCE, (FieldMatch("StudyInstanceUID", "eq", (study_uid,)),), limit=50)
            found = await store.find_records(query)
            images = [r for r in found if str((r.fields.get("SOPClassUID") or ("",))[0]) not in AI_RESULT_CLASSES]
            records = images or found
        if not records or await store.get_record(STUDY, study_uid) is None:
            return None
        return await self.files.read_dataset(store, store.name, records[0])


async def _lesion(repo: Repository, lesion: str) -> tuple[dict[str, Any] | None, str]:
    """The lesion's BodyStructure and its label for people ("Lesion at back (BodyStructure/17)")."""
    body = await repo.current("BodyStructure", lesion.split("/", 1)[1]) if lesion.startswith("BodyStructure/") else None
    where = str(((body or {}).get("location") or {}).get("text") or "site not recorded")
    return body, f"Lesion at {where}" + (f" ({lesion})" if lesion else "")


async def _contradictory(repo: Repository, lesion: str, found: list[tuple[dict[str, Any], hd.sr.CodedConcept]]) -> str:
    """What a PARTIAL SR says of a lesion with two current clinician diagnoses that differ (derm review 5, M1): the
    record is contradictory, so neither is exported as the verified diagnosis (a viewer would show either one);
    the SR is not refused, so the PACS still learns that the case was signed off and what is unresolved."""
    _, label = await _lesion(repo, lesion)
    each = "; ".join(f"{d.meaning} (SNOMED CT {d.value}, Observation/{o['id']})" for o, d in found)
    return f"{label}: the record is contradictory, the clinician's current findings differ ({each}); neither is shown"


def _withdrawn(observation: dict[str, Any]) -> str:
    """A clinician finding the report lists that is not current (entered-in-error, cancelled, preliminary): named,
    never exported as a diagnosis (derm review 5, M1)."""
    what = _snomed(observation.get("valueCodeableConcept"))
    value = f" ({what.meaning}, SNOMED CT {what.value})" if what else ""
    status = str(observation.get("status") or "no status")[:40]
    return (
        f"The clinician's finding Observation/{observation['id']}{value} is {status} (withdrawn or not current) "
        "and is not part of this report."
    )


async def _undecided(repo: Repository, lesion: str, ai: list[dict[str, Any]]) -> tuple[str, str, bool]:
    """A lesion of the report's AI results that no clinician finding addresses (derm review 5, H2): its label, what
    the SR says of it, and whether the AI called it (a positive or equivocal call of a clinical model: the SR is
    then PARTIAL, never a COMPLETE report silent on a melanoma call)."""
    _, label = await _lesion(repo, lesion)
    of_lesion = [o for o in ai if _focus(o) == lesion]
    demonstration = any(_tagged_demo(o) for o in of_lesion)
    calls = sorted(
        {
            f"{c.meaning} (SNOMED CT {c.value})"
            for o in of_lesion
            if _is_diagnosis(o) and (c := _snomed(o.get("valueCodeableConcept")))
        }
    )
    if demonstration:
        said = "the AI output came from a DEMONSTRATION model (not for clinical use)"
    elif calls:
        said = "the AI called " + " and ".join(calls)
    else:
        said = "the AI made no call"
    reports = _sr_uids(of_lesion)
    sr = f"; AI result SR {', '.join(reports)} (preliminary, not reviewed)" if reports else ""
    return label, f"{label}: no clinician decision recorded; {said}{sr}.", bool(calls) and not demonstration


def _decided(
    observation: dict[str, Any], diagnosis: hd.sr.CodedConcept, ai: list[dict[str, Any]]
) -> hd.sr.CodedConcept:
    """The clinician's decision on the lesion's AI results ``ai``, read from what the AI called (derm review 4,
    M1/M2). A demonstration model's output is never a call to confirm or disagree with. "Confirmed" only for a
    copy (``derivedFrom``) of one of the lesion's AI predicted diagnoses with the same value, when every positive
    call of the AI for the lesion is that diagnosis; "overrode: disagreed" only when the AI made a positive call
    and the clinician's differs; otherwise neutral: the AI made no call, was equivocal, or its results differed."""
    if not ai:
        return NO_AI
    if any(_tagged_demo(o) for o in ai):
        return OWN_DEMO
    calls = {o["id"]: c.value for o in ai if _is_diagnosis(o) and (c := _snomed(o.get("valueCodeableConcept")))}
    positive = {code for code in calls.values() if code != EQUIVOCAL}
    if not positive:
        return AI_EQUIVOCAL if calls else AI_NO_CALL
    if diagnosis.value not in positive:
        return CONSISTENT if _same_condition(diagnosis.value, positive) else OVERRODE
    if len(positive) > 1:
        return AI_MIXED
    sources = {
        str(d["reference"]).split("/")[1]
        for d in observation.get("derivedFrom") or []
        if str(d.get("reference", "")).startswith("Observation/")
    }
    return CONFIRMED if any(calls.get(i) == diagnosis.value for i in sources) else OWN_SAME


def _same_condition(diagnosis: str, calls: set[str]) -> bool:
    """The clinician's diagnosis and every positive AI call name one target condition (melanoma, SCC, BCC) at
    different granularity, e.g. 372244006 |Malignant melanoma| for the AI's 93655004 |Malignant melanoma of skin|:
    the outcomes' grouping (``fhir_server.outcomes.codes.CATEGORY_OF``), so agreement audits and the SR agree
    (derm review 5, M5). "Other" diagnoses (naevus vs keratosis) are no common condition."""
    condition = CATEGORY_OF.get(diagnosis)
    return condition in CONDITIONS and all(CATEGORY_OF.get(call) == condition for call in calls)


@dataclasses.dataclass(frozen=True, slots=True)
class Signer:
    """Who signed: their reference (``Practitioner/..`` or ``PractitionerRole/..``), name as a DICOM PN, and
    organisation by name ("" when none is recorded: never the tenant's id, final review dicom.md 5)."""

    reference: str
    name: str
    organization: str


async def _signer(repo: Repository, report: dict[str, Any]) -> Signer:
    """The clinician in ``resultsInterpreter``: a Practitioner, or a PractitionerRole resolved to its
    practitioner and organisation (derm review 4, M6; ``report_sign_off`` accepts both). ValueError, saying why,
    when no person can be named: the export is then recorded as not done, never skipped silently."""
    why = []
    for reference in report.get("resultsInterpreter") or []:
        text, display = str((reference or {}).get("reference", "")), str((reference or {}).get("display") or "")
        kind, _, rest = text.partition("/")
        id = rest.split("/")[0]
        if kind == "Practitioner" and id:
            practitioner = await repo.current("Practitioner", id)
            if practitioner is None and not display:
                why.append(f"{text} is not on record")
                continue
            roles = await repo.find("PractitionerRole", [("practitioner", f"Practitioner/{id}")], 10)
            names = [await _organization(repo, r.resource) for r in roles]
            return Signer(text, _person_name(practitioner, display), next((n for n in names if n), ""))
        if kind == "PractitionerRole" and id:
            role = await repo.current("PractitionerRole", id)
            person = str(((role or {}).get("practitioner") or {}).get("reference") or "")
            practitioner = await repo.current("Practitioner", person.split("/")[1]) if person.count("/") else None
            named = display or str(((role or {}).get("practitioner") or {}).get("display") or "")
            if practitioner is None and not named:
                why.append(f"{text} names no practitioner on record" if role else f"{text} is not on record")
                continue
            return Signer(text, _person_name(practitioner, named), await _organization(repo, role or {}))
        why.append(f"{text[:200] or 'an entry'} is not a Practitioner or PractitionerRole")
    raise ValueError("no clinician to name as the verifying observer: " + "; ".join(why))


async def _organization(repo: Repository, role: dict[str, Any]) -> str:
    """The name of a PractitionerRole's organisation (its Organization's ``name``, else the reference's display)."""
    reference = (role.get("organization") or {}) if isinstance(role.get("organization"), dict) else {}
    text = str(reference.get("reference") or "")
    found = await repo.current("Organization", text.split("/")[1]) if text.startswith("Organization/") else None
    return str((found or {}).get("name") or reference.get("display") or "")[:64]


async def _signed_at(repo: Repository, report: dict[str, Any], signer: Signer) -> str:
    """When the clinician signed: the report's ``issued``, else the signer's Provenance of it (``recorded``); ""
    when neither is recorded, which the SR builder refuses (the export time is never the attestation time)."""
    if report.get("issued"):
        return str(report["issued"])
    target = f"DiagnosticReport/{report['id']}"
    for provenance in await repo.find("Provenance", [("target", target), ("_sort", "-recorded")], 10):
        agents = {str((a.get("who") or {}).get("reference")) for a in provenance.resource.get("agent") or []}
        if signer.reference in agents and provenance.resource.get("recorded"):
            return str(provenance.resource["recorded"])
    return ""


def _in_study(sign_off: SignOff, study_uid: str) -> SignOff:
    """Every decided lesion of the report, each with its images in this study (derm review 4, M4: a lesion
    imaged in another study, or not at all, is still in the SR, and says so; none is left out of a COMPLETE SR)."""
    lesions = tuple(
        dataclasses.replace(d, images=here, imaged_elsewhere=bool(d.images) and not here)
        for d in sign_off.lesions
        for here in [tuple(i for i in d.images if i.study == study_uid)]
    )
    return dataclasses.replace(sign_off, lesions=lesions)


async def _versioned(store: TenantStore, sign_off: SignOff, study_uid: str) -> SignOff:
    """``sign_off`` as the next version of the report's sign-off SR in the study: the earlier ones (oldest first)
    as its predecessors, its Instance Number one more (derm review 4, H2); a re-issue by DermBridge when the SR of
    the same signing without the deletions is one of them (derm review 5, M3: the clinician signed nothing new)."""
    own = sign_off_uid(study_uid, sign_off)
    query = RecordQuery(
        INSTANCE, (FieldMatch("SeriesInstanceUID", "eq", (sign_off_series(study_uid, sign_off.report_id),)),)
    )
    records = [r for r in await store.find_records(query) if r.key != own]
    records.sort(key=lambda r: int(_field(r, "InstanceNumber") or 0))
    previous = tuple(
        Instance(study_uid, _field(r, "SeriesInstanceUID"), _field(r, "SOPClassUID"), r.key) for r in records
    )
    signed = sign_off_uid(study_uid, dataclasses.replace(sign_off, content_key=sign_off.signing_key))
    reissued = own != signed and any(p.sop_instance == signed for p in previous)  # derm review 5, M3
    today = datetime.now(UTC).date().isoformat() if reissued else ""
    return dataclasses.replace(sign_off, previous=previous, version=len(previous) + 1, reissued=today)


def _referenced(kos: Dataset) -> set[str]:
    return {
        str(i.ReferencedSOPInstanceUID)
        for study in kos.get("CurrentRequestedProcedureEvidenceSequence") or []
        for series in study.get("ReferencedSeriesSequence") or []
        for i in series.get("ReferencedSOPSequence") or []
    }


def _sr_uids(ai: list[dict[str, Any]]) -> list[str]:
    uids = {
        str(e["valueIdentifier"]["value"]).removeprefix("urn:oid:")
        for o in ai
        for e in o.get("extension") or []
        if e.get("url") == DICOM_SR_EXTENSION and "valueIdentifier" in e
    }
    return sorted(uids)


async def _image_uids(repo: Repository, ai: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """The DICOM UIDs of the images the lesion's AI results were derived from, and what is said of those deleted
    over DICOMweb (``dicom_node.web.fhir_links`` marks their references: the UID and the date, no reference)."""
    sources = [d for o in ai for d in o.get("derivedFrom") or [] if isinstance(d, dict)]
    media = {str(d.get("reference")) for d in sources if str(d.get("reference", "")).startswith("Media/")}
    gone = sorted(
        {
            f"image {str(d['identifier'].get('value', '')).removeprefix('urn:oid:')}: {d.get('display', 'deleted')}"
            for d in sources
            if d.get("type") == "Media" and "reference" not in d and isinstance(d.get("identifier"), dict)
        }
    )
    uids = []
    for reference in sorted(media):
        found = await repo.current("Media", reference.split("/", 1)[1])
        uids += [
            str(i["value"]).removeprefix("urn:oid:")
            for i in (found or {}).get("identifier") or []
            if i.get("system") == "urn:dicom:uid"
        ]
    return uids, gone


def _missing(uids: list[str], found: list[Instance]) -> list[str]:
    on_record = {i.sop_instance for i in found}
    return [uid for uid in uids if uid not in on_record]


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
