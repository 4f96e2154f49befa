"""Opening a case's review (task.html): one review ``Task`` per case, tier and round.

``open_review`` is what the workflow engine and the inference worker call. It is idempotent: the Task's
identifier ``urn:dermbridge:review-task|<report>/<tier>/<round>`` is deterministic and the Task is
created with a conditional create on it (http.html#ccreate), so a repeated call, or two processes
racing, return the one Task. A new round opens only when the case changed after its last review
was signed off (the report is ``appended``: images arrived after sign-off).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fhir_server.declared_profiles import REVIEW_TASK
from fhir_server.errors import bad_request
from fhir_server.repository import Repository, Stored
from fhir_server.workflow.review.codes import (
    IDENTIFIER_SYSTEM,
    QUEUED,
    REVIEW_CODE,
    TASK_SYSTEM,
    TIER_SYSTEM,
    URGENCIES,
    Urgency,
    review_coding,
    state_concept,
    tier_coding,
    tier_of,
)
from fhir_server.workflow.review.policy import ReviewPolicyError, check_tier, read_policy

OPEN = ("requested", "accepted", "in-progress")
MAX_ROUNDS = 100
MAX_REASON = 1000


def instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


async def review_tasks(repo: Repository, report_id: str, tier: str | None = None) -> list[Stored]:
    """The case's review Tasks (of one tier), oldest round first."""
    criteria = [("focus", f"DiagnosticReport/{report_id}"), ("_sort", "authored-on")]
    criteria.append(("code", f"{TIER_SYSTEM}|{tier}" if tier else f"{TASK_SYSTEM}|{REVIEW_CODE}"))
    return await repo.find("Task", criteria, MAX_ROUNDS)


async def open_review(
    repo: Repository,
    *,
    report_id: str,
    patient_id: str,
    tier: str,
    reason: str,
    urgency: Urgency = "routine",
    due: datetime | None = None,
    now: datetime | None = None,
) -> Stored:
    """The case's open review Task of ``tier``, created (``requested``, businessStatus ``queued``) when
    there is none (made more urgent when ``urgency`` is); the last one when the case has not changed
    since it was closed.

    ``due`` defaults to the tenant policy's due date for ``urgency`` (``review.policy``)."""
    try:
        check_tier(tier)
    except ReviewPolicyError as exc:
        raise bad_request(str(exc), ["tier"]) from exc
    if urgency not in URGENCIES:
        raise bad_request(f"urgency must be one of {', '.join(URGENCIES)}", ["priority"])
    tasks = await review_tasks(repo, report_id, tier)
    now = now or datetime.now(UTC)
    policy = await read_policy(repo.transaction or repo.store)
    for stored in tasks:
        if stored.resource.get("status") in OPEN:
            return await _raised(repo, stored, urgency, due or policy.due(urgency, now), reason, now)
    if tasks and not await _changed_since_sign_off(repo, report_id):
        return tasks[-1]
    due = due or policy.due(urgency, now)
    value = f"{report_id}/{tier}/{len(tasks) + 1}"
    task = _task(value, report_id, patient_id, tier, reason[:MAX_REASON], urgency, due, now)
    return await repo.create(
        task, resource_type="Task", if_none_exist=f"identifier={IDENTIFIER_SYSTEM}|{value}", server_built=True
    )


async def reopen_review(repo: Repository, *, report_id: str, patient_id: str, reason: str) -> Stored:
    """A new review round for a case that changed after sign-off (its report ``appended``): the tier and
    priority of its last review, or the tenant's first tier when it never had one."""
    tasks = await review_tasks(repo, report_id)
    last = tasks[-1].resource if tasks else None
    if last is not None:
        tier, urgency = tier_of(last), last.get("priority", "routine")
    else:
        tier, urgency = next(iter((await read_policy(repo.transaction or repo.store)).tiers)), "routine"
    return await open_review(
        repo, report_id=report_id, patient_id=patient_id, tier=tier, reason=reason, urgency=urgency, due=None
    )


async def _raised(
    repo: Repository, stored: Stored, urgency: Urgency, due: datetime | None, reason: str, now: datetime
) -> Stored:
    """The open Task, made more urgent when the case now is (e.g. the AI's result came after a routine
    review was queued): its priority, due date and reason; a less urgent call changes nothing."""
    task = stored.resource
    if URGENCIES.index(urgency) >= URGENCIES.index(task.get("priority", "routine")):
        return stored
    raised = {**task, "priority": urgency, "lastModified": instant(now), "reasonCode": {"text": reason[:MAX_REASON]}}
    if due is not None:
        raised["restriction"] = {"period": {"end": instant(due)}}
    return await repo.update(raised, resource_type="Task", id=task["id"], if_match=stored.etag, server_built=True)


async def _changed_since_sign_off(repo: Repository, report_id: str) -> bool:
    report = await repo.current("DiagnosticReport", report_id)
    return report is not None and report.get("status") == "appended"


def _task(
    value: str,
    report_id: str,
    patient_id: str,
    tier: str,
    reason: str,
    urgency: Urgency,
    due: datetime | None,
    now: datetime,
) -> dict[str, Any]:
    task: dict[str, Any] = {
        "resourceType": "Task",
        "meta": {"profile": [REVIEW_TASK]},
        "identifier": [{"system": IDENTIFIER_SYSTEM, "value": value}],
        "status": "requested",
        "businessStatus": state_concept(QUEUED),
        "intent": "order",
        "priority": urgency,
        "code": {"coding": [review_coding(), tier_coding(tier)], "text": f"Clinician review ({tier})"},
        "focus": {"reference": f"DiagnosticReport/{report_id}"},
        "for": {"reference": f"Patient/{patient_id}"},
        "authoredOn": instant(now),
        "lastModified": instant(now),
        "performerType": [{"coding": [tier_coding(tier)]}],
        "reasonCode": {"text": reason or "clinician review of the case"},
    }
    if due is not None:
        task["restriction"] = {"period": {"end": instant(due)}}
    return task
