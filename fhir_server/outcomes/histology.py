"""Histopathology as a lesion's ground truth (diagnosticreport.html, observation.html).

A client sends the pathology result as a ``DiagnosticReport``: ``category`` HL7 v2-0074 ``PAT`` or ``SP``,
``conclusionCode`` the SNOMED CT diagnosis (a disorder or an ICD-O morphology), ``resultsInterpreter`` the
pathologist (a final report needs one: ``fhir_server.report_sign_off``), and what it is the histology *of*:

- the extension ``urn:dermbridge:fhir:StructureDefinition:histology-of`` (``valueReference``, repeatable): a
  lesion (``BodyStructure``) of the report's subject, or the case (the imaging ``DiagnosticReport``) when the
  case has exactly one lesion; or
- ``specimen``: a ``Specimen`` whose ``collection.bodySite`` carries the R4 ``bodySite`` extension referring
  to the lesion (extension-bodysite.html), as a laboratory records where a specimen was taken.

A client's write is checked (a guard, 422 naming the element): an extension link must name a lesion or a
case of the report's subject, a case must have one lesion, a linked report needs a SNOMED CT
``conclusionCode``, and a report linked to several lesions has one diagnosis for all of them (which of
several diagnoses is which lesion's is not recorded: one report per lesion or specimen). A pathology report
is never written under a ``patient/`` scope (403).

The server then writes, per lesion, one ground-truth ``Observation`` (the outbox consumer
``HistologyLinker``): code SNOMED CT 439401001 |Diagnosis| and
``urn:dermbridge:outcome|histology-ground-truth``, ``method`` 714797009 |Histologic test|, ``focus`` the
BodyStructure, ``derivedFrom`` the report, ``performer`` the pathologist, the value the report's diagnosis. It
follows the report: amended or corrected reports amend it, an ``entered-in-error`` or ``cancelled`` report (or
a link dropped) makes it ``entered-in-error``; a report not yet final links nothing. Clients cannot write it.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from fhir_server.audit.events import ENTITY_TYPE, OBJECT_ROLE, REST_TYPE
from fhir_server.audit.trail import AuditTrail
from fhir_server.errors import OperationOutcomeError, conflict, forbidden, unprocessable
from fhir_server.outbox import Subscription
from fhir_server.outcomes.codes import (
    BODY_SITE_EXTENSION,
    DIAGNOSIS,
    GROUND_TRUTH_CODE,
    GROUND_TRUTH_IDENTIFIER,
    HISTOLOGIC_TEST,
    HISTOLOGY_OF,
    OBSERVATION_CATEGORY,
    OUTCOME_SYSTEM,
    PATHOLOGY_CATEGORIES,
    V2_0074,
    category,
    codings,
    has_coding,
    snomed_codes,
)
from fhir_server.repository import Repository, load
from fhir_server.security.policy import AccessPolicy
from fhir_server.storage.port import Engine, OutboxEvent, TenantReader, TenantStore

log = logging.getLogger(__name__)
Reader = Callable[[str, str], Awaitable[dict[str, Any] | None]]
AfterLink = Callable[[TenantStore, list[str]], Awaitable[None]]  # the lesions given a new ground truth
CONSUMER = "outcomes-histology"
SIGNED = {"final": "final", "amended": "amended", "corrected": "corrected"}
MAX_LINKS = 20
GROUND_TRUTH = {
    "system": OUTCOME_SYSTEM,
    "code": GROUND_TRUTH_CODE,
    "display": "Histopathology ground truth of a lesion",
}
LABORATORY = {"coding": [{"system": OBSERVATION_CATEGORY, "code": "laboratory", "display": "Laboratory"}]}


def is_pathology(report: dict[str, Any] | None) -> bool:
    """A DiagnosticReport of category v2-0074 PAT (pathology) or SP (surgical pathology)."""
    return report is not None and any(
        c.get("system") == V2_0074 and c.get("code") in PATHOLOGY_CATEGORIES
        for concept in report.get("category") or []
        for c in codings(concept)
    )


def _links(report: dict[str, Any]) -> list[str]:
    found = [
        str((e.get("valueReference") or {}).get("reference", ""))
        for e in report.get("extension") or []
        if isinstance(e, dict) and e.get("url") == HISTOLOGY_OF
    ]
    if len(found) > MAX_LINKS:
        raise unprocessable(f"at most {MAX_LINKS} histology-of links", ["DiagnosticReport.extension"])
    return found


def _split(reference: str) -> tuple[str, str]:
    kind, _, id = reference.partition("/")
    return kind, id


async def _case_lesions(read: Reader, case: dict[str, Any], subject: str) -> set[str]:
    """The lesions of a case: the BodyStructures its results are about, of the report's ``subject`` only (a
    result naming another patient's lesion never gives that lesion ground truth nor leaks its site)."""
    lesions: set[str] = set()
    for item in (case.get("result") or [])[:500]:
        kind, id = _split(str((item or {}).get("reference", "")))
        observation = await read("Observation", id) if kind == "Observation" and id else None
        for focus in (observation or {}).get("focus") or []:
            target, lesion = _split(str((focus or {}).get("reference", "")))
            if target == "BodyStructure" and lesion and lesion not in lesions:
                body = await read("BodyStructure", lesion)
                if body is not None and (body.get("patient") or {}).get("reference") == subject:
                    lesions.add(lesion)
    return lesions


async def _linked_lesion(read: Reader, reference: str, subject: str) -> str:
    kind, id = _split(reference)
    where = ["DiagnosticReport.extension"]
    if kind == "BodyStructure" and id:
        lesion = await read("BodyStructure", id)
        if lesion is None or (lesion.get("patient") or {}).get("reference") != subject:
            raise unprocessable(f"histology-of {reference[:80]!r} is not a lesion of {subject}", where)
        return id
    if kind == "DiagnosticReport" and id:
        case = await read("DiagnosticReport", id)
        if case is None or (case.get("subject") or {}).get("reference") != subject or is_pathology(case):
            raise unprocessable(f"histology-of {reference[:80]!r} is not a case of {subject}", where)
        lesions = await _case_lesions(read, case, subject)
        if len(lesions) != 1:
            raise unprocessable(
                f"the case {reference} has {len(lesions)} lesions with AI or clinician findings: name the lesion "
                "(histology-of BodyStructure/<id>) the specimen was taken from",
                where,
            )
        return lesions.pop()
    raise unprocessable("histology-of refers to a lesion (BodyStructure) or a case (DiagnosticReport)", where)


async def _specimen_lesions(read: Reader, report: dict[str, Any], subject: str) -> list[str]:
    found = []
    for item in (report.get("specimen") or [])[:MAX_LINKS]:
        kind, id = _split(str((item or {}).get("reference", "")))
        specimen = await read("Specimen", id) if kind == "Specimen" and id else None
        site = ((specimen or {}).get("collection") or {}).get("bodySite") or {}
        for extension in site.get("extension") or []:
            target, lesion = _split(str(((extension or {}).get("valueReference") or {}).get("reference", "")))
            if extension.get("url") == BODY_SITE_EXTENSION and target == "BodyStructure" and lesion:
                body = await read("BodyStructure", lesion)
                if body is not None and (body.get("patient") or {}).get("reference") == subject:
                    found.append(lesion)
    return found


async def lesions_of(read: Reader, report: dict[str, Any], *, specimens: bool) -> list[str]:
    """The lesions a pathology report is the histology of (422 for a link that names none of the subject's)."""
    subject = str((report.get("subject") or {}).get("reference", ""))
    links = _links(report)
    if links and not subject.startswith("Patient/"):
        raise unprocessable("a linked pathology report needs its subject (Patient)", ["DiagnosticReport.subject"])
    lesions = [await _linked_lesion(read, link, subject) for link in links]
    if specimens and subject.startswith("Patient/"):
        lesions += await _specimen_lesions(read, report, subject)
    return list(dict.fromkeys(lesions))


def _reader(reader: TenantReader) -> Reader:
    async def read(resource_type: str, id: str) -> dict[str, Any] | None:
        version = await reader.read(resource_type, id)
        return None if version is None or version.deleted else load(version)

    return read


async def guard_pathology_report(
    reader: TenantReader, policy: AccessPolicy, resource_type: str, resource: dict[str, Any] | None, _: Any
) -> None:
    """A write guard (``fhir_server.write_guards``) on DiagnosticReport: a pathology report's histology-of
    links must hold, and a linked report must carry its SNOMED CT diagnosis. A pathology report is never
    written under a ``patient/`` scope (403): a patient's own "pathology report" would be ground truth."""
    if resource is None or not is_pathology(resource):
        return
    if "all" not in (policy.decide(resource_type, "c"), policy.decide(resource_type, "u")):
        raise forbidden(
            "a pathology DiagnosticReport (category PAT/SP) is sent by the laboratory or a clinician "
            "(user/ or system/ scope), not under a patient/ scope"
        )
    lesions = await lesions_of(_reader(reader), resource, specimens=True)
    if _links(resource) and not any(snomed_codes(c) for c in resource.get("conclusionCode") or []):
        raise unprocessable(
            "a pathology report linked to a lesion needs its diagnosis as a SNOMED CT conclusionCode",
            ["DiagnosticReport.conclusionCode"],
        )
    if len(lesions) > 1 and len(_diagnoses(resource)) > 1:
        raise unprocessable(
            f"a pathology report linked to {len(lesions)} lesions has {len(_diagnoses(resource))} diagnoses, and "
            "which lesion has which is not recorded: send one report per lesion (or per specimen), or link "
            "several lesions only when they share the one diagnosis",
            ["DiagnosticReport.conclusionCode"],
        )


def _diagnoses(report: dict[str, Any]) -> set[tuple[str, ...]]:
    """The distinct SNOMED CT diagnoses of a report (its coded conclusionCodes)."""
    return {tuple(sorted(snomed_codes(c))) for c in report.get("conclusionCode") or [] if snomed_codes(c)}


def ground_truth_rule(resource: dict[str, Any] | None, before: dict[str, Any] | None) -> None:
    """A managed-content rule on Observation: the ground truth is written by the server only."""
    if _is_ground_truth(resource) or _is_ground_truth(before):
        raise conflict(
            "a histopathology ground-truth Observation is written by the server from the pathology "
            "DiagnosticReport: send or correct the report instead"
        )


def _is_ground_truth(resource: dict[str, Any] | None) -> bool:
    if resource is None:
        return False
    identified = any(
        isinstance(i, dict) and i.get("system") == GROUND_TRUTH_IDENTIFIER for i in resource.get("identifier") or []
    )
    return identified or has_coding(resource.get("code"), OUTCOME_SYSTEM, GROUND_TRUTH_CODE)


def _deciding(report: dict[str, Any]) -> dict[str, Any]:
    """The conclusionCode that decides the lesion's category (the most concerning), else the first coded one."""
    coded = [c for c in report.get("conclusionCode") or [] if snomed_codes(c)]
    wanted = category(coded)
    return next((c for c in coded if category([c]) == wanted), coded[0]) if coded else {}


def ground_truth(report: dict[str, Any], lesion: dict[str, Any], status: str) -> dict[str, Any]:
    """The lesion's ground-truth Observation from the pathology report."""
    report_ref = f"DiagnosticReport/{report['id']}"
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "identifier": [{"system": GROUND_TRUTH_IDENTIFIER, "value": f"{report['id']}/{lesion['id']}"}],
        "status": status,
        "category": [LABORATORY],
        "code": {"coding": [DIAGNOSIS, GROUND_TRUTH], "text": "Histopathology diagnosis of the lesion"},
        "subject": report["subject"],
        "focus": [{"reference": f"BodyStructure/{lesion['id']}"}],
        "method": {"coding": [HISTOLOGIC_TEST]},
        "valueCodeableConcept": copy.deepcopy(_deciding(report)),
        "derivedFrom": [{"reference": report_ref}],
        "note": [{"text": f"Ground truth for AI performance monitoring, from the pathology report {report_ref}."}],
    }
    for key in ("effectiveDateTime", "effectivePeriod", "issued"):
        if key in report:
            observation[key] = report[key]
    if report.get("resultsInterpreter"):
        observation["performer"] = copy.deepcopy(report["resultsInterpreter"])
    if len(report.get("specimen") or []) == 1:
        observation["specimen"] = report["specimen"][0]
    if lesion.get("location"):
        site = copy.deepcopy(lesion["location"])
        site["extension"] = [
            {"url": BODY_SITE_EXTENSION, "valueReference": {"reference": f"BodyStructure/{lesion['id']}"}}
        ]
        observation["bodySite"] = site
    return observation


async def link(repo: Repository, report: dict[str, Any]) -> list[str]:
    """Write the ground truth of a pathology report's lesions in ``repo``'s transaction, and withdraw what the
    report no longer supports (a status other than final, amended or corrected links no lesion); the lesions
    whose ground truth is new or changed."""
    status = SIGNED.get(str(report.get("status")))
    try:
        lesions = await lesions_of(repo.current, report, specimens=True) if status else []
    except OperationOutcomeError as error:  # the links changed since the write was accepted
        log.warning("pathology DiagnosticReport/%s: no ground truth written: %s", report.get("id"), error)
        lesions = []
    if len(lesions) > 1 and len(_diagnoses(report)) > 1:  # a specimen re-pointed since: which is which is unknown
        log.warning("pathology DiagnosticReport/%s: several lesions and diagnoses, no ground truth", report.get("id"))
        lesions = []
    changed = []
    for lesion_id in lesions:
        lesion = await repo.current("BodyStructure", lesion_id)
        if lesion is None or status is None:
            continue
        if await _put(repo, ground_truth(report, lesion, status)):
            changed.append(lesion_id)
    criteria = [("derived-from", f"DiagnosticReport/{report['id']}"), ("code", f"{OUTCOME_SYSTEM}|{GROUND_TRUTH_CODE}")]
    earlier = await repo.find("Observation", criteria, MAX_LINKS * 2)
    for stored in earlier:
        focus = str(stored.resource.get("focus", [{}])[0].get("reference", ""))
        if focus.removeprefix("BodyStructure/") not in lesions and stored.resource.get("status") != "entered-in-error":
            await _put(repo, {**stored.resource, "status": "entered-in-error"})
    return changed


async def _put(repo: Repository, observation: dict[str, Any]) -> bool:
    """Create or update by identifier; False when the stored one already says the same."""
    token = f"{GROUND_TRUTH_IDENTIFIER}|{observation['identifier'][0]['value']}"
    found = await repo.find("Observation", [("identifier", token)], 1)
    if not found:
        await repo.create(observation, resource_type="Observation", server_built=True)
        return True
    current = found[0].resource
    wanted = {**observation, "id": current["id"]}
    if {k: v for k, v in current.items() if k != "meta"} == wanted:
        return False
    await repo.update(wanted, resource_type="Observation", id=current["id"], server_built=True)
    return True


def linked_event(report: dict[str, Any], lesions: list[str]) -> dict[str, Any]:
    """The AuditEvent of ground truth written from a pathology report (references only)."""

    def entity(reference: str, kind: str) -> dict[str, Any]:
        return {"what": {"reference": reference}, "type": {"system": ENTITY_TYPE, "code": kind}}

    patient = entity(str(report["subject"]["reference"]), "1")
    patient["role"] = {"system": OBJECT_ROLE, "code": "1"}
    return {
        "resourceType": "AuditEvent",
        "type": REST_TYPE,
        "subtype": [{"system": "urn:dermbridge:audit-subtype", "code": "histology-ground-truth"}],
        "action": "C",
        "recorded": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "outcome": "0",
        "agent": [{"who": {"display": "DermBridge histology linker"}, "requestor": False}],
        "source": {"observer": {"display": "DermBridge outcomes monitoring"}},
        "entity": [entity(f"DiagnosticReport/{report['id']}", "2"), patient]
        + [entity(f"BodyStructure/{lesion}", "2") for lesion in lesions],
    }


class HistologyLinker:
    """The outbox consumer that keeps each lesion's ground truth in step with its pathology reports."""

    def __init__(self, engine: Engine, audit: AuditTrail | None = None, after_link: AfterLink | None = None) -> None:
        self.engine = engine
        self.audit = audit
        self.after_link = after_link

    def subscription(self) -> Subscription:
        return Subscription(CONSUMER, ("resource.created", "resource.updated"), self.handle)

    async def handle(self, tenant: str, event: OutboxEvent) -> None:
        if event.payload.get("type") != "DiagnosticReport":
            return
        store = await self.engine.tenant(tenant)
        repo = Repository.system(store, reason="link histopathology to lesions as ground truth")
        report = await repo.current("DiagnosticReport", str(event.payload["id"]))
        if report is None or not is_pathology(report):
            return
        async with store.transaction() as tx:
            changed = await link(repo.within(tx), report)
            if changed and self.audit is not None:
                await self.audit.record_in(store, tx, linked_event(report, changed))
        if changed and self.after_link is not None:
            await self.after_link(store, changed)
