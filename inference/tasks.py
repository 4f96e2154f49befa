"""Workflow records of the AI step when it does not produce results: a failed analysis (a Task
with an OperationOutcome) and a case sent to human review (a requested Task)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fhir_server.repository import Repository, Stored
from inference.findings import FINDING_SYSTEM, ImageContext

TASK_SYSTEM = "urn:dermbridge:task"
AI_ANALYSIS_CODE = {"coding": [{"system": TASK_SYSTEM, "code": "ai-analysis", "display": "AI analysis"}]}
HUMAN_REVIEW_CODE = {"coding": [{"system": TASK_SYSTEM, "code": "clinician-review", "display": "Clinician review"}]}


async def _task_once(repo: Repository, task: dict[str, Any], key: str) -> Stored:
    found = await repo.find("Task", [("identifier", f"{FINDING_SYSTEM}|{key}")], 1)
    if found:
        return found[0]
    task["identifier"] = [{"system": FINDING_SYSTEM, "value": key}]
    return await repo.create(task, resource_type="Task", server_built=True)


def _task(context: ImageContext, status: str, code: dict[str, Any], reason: str) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    task: dict[str, Any] = {
        "resourceType": "Task",
        "status": status,
        "intent": "order",
        "code": code,
        "for": {"reference": f"Patient/{context.patient_id}"},
        "authoredOn": now,
        "lastModified": now,
        "statusReason": {"text": reason},
        "input": [{"type": {"text": "image"}, "valueReference": {"reference": f"Media/{context.media_id}"}}],
    }
    if context.report_id and context.report_id != "None":
        task["focus"] = {"reference": f"DiagnosticReport/{context.report_id}"}
    return task


async def record_failure(repo: Repository, context: ImageContext, reason: str) -> Stored:
    """A failed AI analysis Task of the case, its output an OperationOutcome saying why."""
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "processing", "diagnostics": reason}],
    }
    key = f"failure-{context.instance_uid}"
    found = await repo.find("Task", [("identifier", f"{FINDING_SYSTEM}|{key}")], 1)
    if found:
        return found[0]
    stored_outcome = await repo.create(outcome, resource_type="OperationOutcome", server_built=True)
    task = _task(context, "failed", AI_ANALYSIS_CODE, reason)
    reference = {"reference": f"OperationOutcome/{stored_outcome.resource['id']}"}
    task["output"] = [{"type": {"text": "OperationOutcome"}, "valueReference": reference}]
    return await _task_once(repo, task, key)


async def request_human_review(repo: Repository, context: ImageContext, reason: str) -> Stored:
    """The case goes to the clinician reviewer queue without AI results."""
    return await _task_once(
        repo, _task(context, "requested", HUMAN_REVIEW_CODE, reason), f"review-{context.instance_uid}"
    )


REQUEUED = "AI analysis queued again"  # how a requeued refusal's review Task reads until the image is analysed
REFUSED = "no AI analysis"  # how the reason of a review Task opened by a refused analysis begins (worker)


async def note_requeued(repo: Repository, patient_id: str, why: str) -> int:
    """The patient's open review Tasks of refused analyses say that the images were queued again
    (a Consent arrived), so a reviewer does not read a stale "no AI analysis"; returns how many."""
    criteria = [("patient", f"Patient/{patient_id}"), ("code", f"{TASK_SYSTEM}|clinician-review"),
                ("status", "requested")]  # fmt: skip
    noted = 0
    for stored in await repo.find("Task", criteria, 100):
        task = dict(stored.resource)  # the workflow's review Tasks keep their reason in reasonCode
        before = str((task.get("statusReason") or task.get("reasonCode") or {}).get("text", ""))
        if not before.startswith(REFUSED):
            continue
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        field = "reasonCode" if "reasonCode" in task else "statusReason"  # the workflow's: the engine rewrites it
        task[field] = {"text": f"{REQUEUED}: {why} (before: {before})"}  # when the findings arrive
        task["note"] = [*task.get("note", []), {"time": now, "text": f"{REQUEUED}: {why}"}]
        task["lastModified"] = now
        await repo.update(task, resource_type="Task", id=str(task["id"]), server_built=True)
        noted += 1
    return noted


async def complete_requeued(repo: Repository, context: ImageContext, now: str) -> Stored | None:
    """The review Task of an image refused then queued again (a Consent arrived) is completed once the
    image is analysed: a reviewer does not wait on an analysis that is done."""
    found = await repo.find("Task", [("identifier", f"{FINDING_SYSTEM}|review-{context.instance_uid}")], 1)
    if not found or found[0].resource.get("status") != "requested":
        return None
    task = dict(found[0].resource)
    if not str((task.get("statusReason") or {}).get("text", "")).startswith(REQUEUED):
        return None  # still a refusal that stands (e.g. an unsuitable image)
    done = f"AI analysis done on {now}: the results are on the case"
    task.update(status="completed", statusReason={"text": done}, lastModified=now)
    task["note"] = [*task.get("note", []), {"time": now, "text": done}]
    return await repo.update(task, resource_type="Task", id=str(task["id"]), server_built=True)
