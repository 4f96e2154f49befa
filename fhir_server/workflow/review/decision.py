"""A reviewer's decision on a case (``$complete``): the clinician's findings beside the AI's, the case
signed off, and a Provenance naming the verifier (provenance.html, diagnosticreport.html).

- ``confirm``: refused (422) for a demonstration model's output (a model card with ``clinical_use: false``)
  and for an Equivocal AI result (SNOMED 42425007): neither is a diagnosis to confirm. Otherwise each AI
  predicted diagnosis of the case (or, when there is none, each AI result) is copied into a clinician
  Observation (same code, value, lesion ``focus`` and body site; ``performer`` the Practitioner;
  ``derivedFrom`` the AI result *at its version*, ``Observation/1/_history/2``). The copy is the snapshot:
  a later change to the AI result changes neither the copy nor what the Provenance says was confirmed (it
  lists every AI result used, at its version).
- ``override``: one Observation per lesion the reviewer names (``finding`` parts ``lesion``, ``diagnosis``
  a SNOMED CT concept, optional ``urgency`` and ``note``): code SNOMED 439401001 |Diagnosis|, the value
  the reviewer's diagnosis, ``focus`` the lesion's BodyStructure, the urgency as a component.
- ``decline-to-decide``: no findings, the case stays as it is (not ``final``), the reason is kept on the
  Task; the flow decides what next (a face-to-face appointment, another tier).

Confirm and override make the case ``final`` with ``resultsInterpreter`` the Practitioner, add the
clinician Observations to ``DiagnosticReport.result`` (the AI results stay: side by side, never
overwritten) and write a ``Provenance`` whose agent is the ``verifier``
(terminology.hl7.org/CodeSystem/provenance-participant-type) and whose entities are the AI results used.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fhir_server.api.parameters import one_of, values_of
from fhir_server.declared_profiles import CLINICIAN_FINDING
from fhir_server.errors import bad_request, conflict, unprocessable
from fhir_server.repository import Repository, Stored
from fhir_server.workflow.review.codes import DECIDED, DECISION_SYSTEM, DECISIONS, NO_DECISION, URGENCIES
from fhir_server.workflow.review.queue import instant
from fhir_server.workflow.review.reviewer import Reviewer

SNOMED = "http://snomed.info/sct"
DIAGNOSIS = {"system": SNOMED, "code": "439401001", "display": "Diagnosis"}
URGENCY_CODE = {"system": "urn:dermbridge:review-finding", "code": "referral-urgency", "display": "Referral urgency"}
METHOD = {"coding": [{"system": "urn:dermbridge:method", "code": "clinician-review", "display": "Clinician review"}]}
IMAGING = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "imaging",
            "display": "Imaging",
        }
    ]
}
VERIFIER = {
    "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
    "code": "verifier",
    "display": "Verifier",
}
SIGNED_OFF = ("final", "amended", "corrected")  # "appended": images arrived after sign-off, reviewed again
COPIED = ("category", "code", "subject", "focus", "bodySite", "interpretation", "component", "method", "specimen")
MAX_FINDINGS = 50
MAX_TEXT = 2000
AI_AWAITING = " Awaiting clinician review."
DEMONSTRATION = ("urn:dermbridge:ai-use", "demonstration")  # the tag of a demonstration model's output (inference)
EQUIVOCAL = "42425007"  # SNOMED CT |Equivocal (qualifier value)|: a concerning class just under its threshold


@dataclass(frozen=True, slots=True)
class Decision:
    state: str  # the Task's businessStatus
    outputs: list[dict[str, Any]]


async def decide(
    repo: Repository, task: dict[str, Any], reviewer: Reviewer, given: list[tuple[str, Any]], now: datetime
) -> Decision:
    """Write the decision ``given`` (the ``$complete`` parameters) on the Task's case, in ``repo``'s transaction."""
    kind = one_of(given, "decision")
    if kind not in DECISIONS:
        raise bad_request(f"decision must be one of {', '.join(DECISIONS)}", ["decision"])
    outputs = [
        _output(
            "decision",
            {
                "valueCodeableConcept": {
                    "coding": [{"system": DECISION_SYSTEM, "code": kind, "display": DECISIONS[kind]}]
                }
            },
        )
    ]
    report = await _case(repo, task)
    if kind == "decline-to-decide":
        reason = _text(one_of(given, "reason"), "reason")
        if not reason:
            raise bad_request("decline-to-decide needs a reason", ["reason"])
        return Decision(NO_DECISION, [*outputs, _output("reason", {"valueString": reason})])
    ai = await _ai_results(repo, report)
    if kind == "confirm":
        if not ai:
            raise unprocessable("the case has no AI findings to confirm: override with the reviewer's findings")
        _refuse_demonstration(_confirmable(ai))
        _refuse_equivocal(_confirmable(ai))
        findings = [_confirmed(s, reviewer, now) for s in _confirmable(ai)]
    else:
        findings = [await _overridden(repo, report, part, reviewer, now) for part in _finding_parts(given)]
    written = [await repo.create(f, resource_type="Observation", server_built=True) for f in findings]
    signed = await _sign_off(
        repo, report, kind, written, reviewer, _text(one_of(given, "conclusion"), "conclusion"), now
    )
    provenance = await _provenance(repo, signed, written, ai, task, reviewer, now)
    references = [_output("finding", {"valueReference": {"reference": _ref(s)}}) for s in written]
    return Decision(
        DECIDED, [*outputs, *references, _output("provenance", {"valueReference": {"reference": _ref(provenance)}})]
    )


def _output(name: str, value: dict[str, Any]) -> dict[str, Any]:
    return {"type": {"coding": [{"system": DECISION_SYSTEM, "code": name}], "text": name}, **value}


def _ref(stored: Stored, versioned: bool = False) -> str:
    base = f"{stored.resource['resourceType']}/{stored.resource['id']}"
    return f"{base}/_history/{stored.version.version}" if versioned else base


def _text(value: Any, name: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise bad_request(f"{name} is a string", [name])
    if len(value) > MAX_TEXT:
        raise bad_request(f"{name} is longer than {MAX_TEXT} characters", [name])
    return value.strip()


async def _case(repo: Repository, task: dict[str, Any]) -> Stored:
    focus = str((task.get("focus") or {}).get("reference", ""))
    if not focus.startswith("DiagnosticReport/"):
        raise unprocessable("the review Task has no case (focus DiagnosticReport)")
    report = await repo.read("DiagnosticReport", focus.split("/", 1)[1])
    if report.resource.get("status") in SIGNED_OFF:
        raise conflict(f"{focus} is already signed off ({report.resource['status']}): a decision is made once")
    return report


async def _ai_results(repo: Repository, report: Stored) -> list[Stored]:
    """The AI's results in the case (Observations with a ``device``), each at its current version."""
    found = []
    for item in report.resource.get("result") or []:
        reference = str(item.get("reference", ""))
        if reference.startswith("Observation/"):
            observation = await repo.read("Observation", reference.split("/", 1)[1])
            if "device" in observation.resource:
                found.append(observation)
    return found


def _confirmable(ai: list[Stored]) -> list[Stored]:
    """What a confirmation copies: the AI's predicted diagnoses; when it predicted none (no class above its
    threshold), its results themselves. Every AI result used stays listed, at its version, in the Provenance."""
    diagnoses = [s for s in ai if DIAGNOSIS["code"] in {c.get("code") for c in s.resource["code"].get("coding", [])}]
    return diagnoses or ai


def _refuse_demonstration(ai: list[Stored]) -> None:
    """A demonstration model's output (card ``clinical_use: false``) is no diagnosis: confirming it would sign
    a final report that asserts one. The reviewer records their own findings instead (``override``)."""
    for stored in ai:
        tags = (stored.resource.get("meta") or {}).get("tag") or []
        if any((t.get("system"), t.get("code")) == DEMONSTRATION for t in tags if isinstance(t, dict)):
            raise unprocessable(
                f"Observation/{stored.resource['id']} is a demonstration model's output (not for clinical use): it "
                "cannot be confirmed as a diagnosis; record the reviewer's own findings with decision override"
            )


def _refuse_equivocal(ai: list[Stored]) -> None:
    """An Equivocal AI result (SNOMED 42425007) is no diagnosis: confirming it would sign a final report whose
    diagnosis is "Equivocal", with no plan (derm review 4, H1). The reviewer gives their own (``override``) or
    declines to decide."""
    for stored in ai:
        codings = (stored.resource.get("valueCodeableConcept") or {}).get("coding") or []
        if any(c.get("system") == SNOMED and c.get("code") == EQUIVOCAL for c in codings if isinstance(c, dict)):
            raise unprocessable(
                f"Observation/{stored.resource['id']}: the AI result is equivocal (SNOMED CT 42425007), which is not a "
                "diagnosis: record the clinician's own diagnosis and plan with decision override, or decline-to-decide"
            )


def _clinician(reviewer: Reviewer, now: datetime) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "meta": {"profile": [CLINICIAN_FINDING]},
        "status": "final",
        "performer": [reviewer.reference()],
        "effectiveDateTime": instant(now),
        "issued": instant(now),
    }


def _confirmed(ai: Stored, reviewer: Reviewer, now: datetime) -> dict[str, Any]:
    observation = _clinician(reviewer, now)
    observation.update({k: copy.deepcopy(v) for k, v in ai.resource.items() if k in COPIED or k.startswith("value")})
    observation["method"] = METHOD
    observation["derivedFrom"] = [{"reference": _ref(ai, versioned=True)}]
    observation["note"] = [{"text": f"Confirmed on clinician review: a copy of {_ref(ai, versioned=True)}"}]
    return observation


def _finding_parts(given: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    parts = values_of(given, "finding")
    if not parts:
        raise bad_request("override needs at least one finding (parts lesion, diagnosis, urgency)", ["finding"])
    if len(parts) > MAX_FINDINGS:
        raise bad_request(f"at most {MAX_FINDINGS} findings", ["finding"])
    found = []
    for part in parts:
        if not isinstance(part, list):
            raise bad_request("a finding has parts: lesion, diagnosis, urgency, note", ["finding"])
        named = [(p.get("name"), next((v for k, v in p.items() if k.startswith("value")), None)) for p in part]
        found.append({name: value for name, value in named})
    return found


async def _overridden(
    repo: Repository, report: Stored, finding: dict[str, Any], reviewer: Reviewer, now: datetime
) -> dict[str, Any]:
    lesion = str((finding.get("lesion") or {}).get("reference", ""))
    subject = report.resource.get("subject")
    body = await repo.current("BodyStructure", lesion.split("/", 1)[1]) if lesion.startswith("BodyStructure/") else None
    if body is None or (body.get("patient") or {}).get("reference") != (subject or {}).get("reference"):
        raise unprocessable(
            f"finding.lesion {lesion[:100]!r} is not a lesion (BodyStructure) of the case's patient", ["finding.lesion"]
        )
    diagnosis = finding.get("diagnosis")
    codings = diagnosis.get("coding") if isinstance(diagnosis, dict) else None
    if not codings or not any(c.get("system") == SNOMED and c.get("code") for c in codings):
        raise bad_request("finding.diagnosis is a CodeableConcept with a SNOMED CT coding", ["finding.diagnosis"])
    observation = _clinician(reviewer, now)
    observation.update(
        {
            "category": [IMAGING],
            "code": {"coding": [DIAGNOSIS]},
            "subject": subject,
            "focus": [{"reference": lesion}],
            "method": METHOD,
            "valueCodeableConcept": copy.deepcopy(diagnosis),
        }
    )
    if "location" in body:
        observation["bodySite"] = copy.deepcopy(body["location"])
    urgency = finding.get("urgency")
    if urgency is not None:
        if urgency not in URGENCIES:
            raise bad_request(f"finding.urgency must be one of {', '.join(URGENCIES)}", ["finding.urgency"])
        value = {"coding": [{"system": "http://hl7.org/fhir/request-priority", "code": urgency}]}
        observation["component"] = [{"code": {"coding": [URGENCY_CODE]}, "valueCodeableConcept": value}]
    note = _text(finding.get("note"), "finding.note")
    if note:
        observation["note"] = [{"text": note}]
    return observation


async def _sign_off(
    repo: Repository,
    report: Stored,
    kind: str,
    written: list[Stored],
    reviewer: Reviewer,
    conclusion: str,
    now: datetime,
) -> Stored:
    signed = copy.deepcopy(report.resource)
    signed["status"] = "final"
    signed["issued"] = instant(now)
    signed["resultsInterpreter"] = [reviewer.reference()]
    signed["result"] = [*(signed.get("result") or []), *({"reference": _ref(s)} for s in written)]
    ai_text = str(signed.get("conclusion") or "").removesuffix(AI_AWAITING)
    who = reviewer.display or reviewer.practitioner
    if kind == "override":
        signed["conclusionCode"] = [copy.deepcopy(s.resource["valueCodeableConcept"]) for s in written]
        signed.pop("_conclusionCode", None)
        texts = [
            s.resource["valueCodeableConcept"].get("text")
            or s.resource["valueCodeableConcept"]["coding"][0].get("display", "")
            for s in written
        ]
        signed["conclusion"] = conclusion or f"Clinician review by {who}: {'; '.join(t for t in texts if t)}"
    else:
        signed["conclusion"] = conclusion or f"Confirmed on clinician review by {who}. {ai_text}".strip()
    signed.pop("_conclusion", None)  # the text is the clinician's now, not AI-asserted
    return await repo.update(signed, resource_type="DiagnosticReport", id=signed["id"], server_built=True)


async def _provenance(
    repo: Repository,
    report: Stored,
    written: list[Stored],
    ai: list[Stored],
    task: dict[str, Any],
    reviewer: Reviewer,
    now: datetime,
) -> Stored:
    targets = [_ref(report, versioned=True), *(_ref(s, versioned=True) for s in written)]
    provenance = {
        "resourceType": "Provenance",
        "target": [{"reference": t} for t in targets],
        "recorded": instant(now),
        "reason": [{"text": "clinician review of the case"}],
        "agent": [{"type": {"coding": [VERIFIER]}, "who": reviewer.reference()}],
        "entity": [{"role": "source", "what": {"reference": _ref(s, versioned=True)}} for s in ai]
        + [{"role": "source", "what": {"reference": f"Task/{task['id']}"}}],
    }
    return await repo.create(provenance, resource_type="Provenance", server_built=True)
