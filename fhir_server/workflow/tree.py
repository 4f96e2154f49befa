"""A case's Task tree (task.html#statemachine): one root Task per case (``focus`` the case DiagnosticReport,
``instantiatesCanonical`` the PlanDefinition version that runs it) and one step Task per step
(``partOf`` the root, ``businessStatus`` saying where the step is).

Ids are deterministic (derived from the case's id and the step's code) and written with update-as-create,
so a redelivered event finds the Tasks it wrote before: no duplicate, however often an event comes.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from fhir_server.repository import Repository
from fhir_server.workflow import codes

MAX_INPUTS = 500  # recorded image events and deferred events of one case
IMAGE_EVENT, DEFERRED = "image-event", "deferred-event"
STARTED = "started"  # the root Task's businessStatus when it is opened
OPEN = ("requested", "accepted", "ready", "in-progress", "on-hold")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def task_id(report_id: str, step: str) -> str:
    digest = hashlib.sha256(report_id.encode()).hexdigest()[:24]
    return f"wf-{digest}-{step}"


class Tree:
    """The Tasks of one case, read and written in the caller's transaction."""

    def __init__(self, repo: Repository, report_id: str, patient_id: str) -> None:
        self.repo, self.report_id, self.patient_id = repo, report_id, patient_id

    async def get(self, step: str) -> dict[str, Any] | None:
        return await self.repo.current("Task", task_id(self.report_id, step))

    async def save(self, task: dict[str, Any]) -> dict[str, Any]:
        task["lastModified"] = now()
        stored = await self.repo.update(task, resource_type="Task", id=str(task["id"]), server_built=True)
        return stored.resource

    def new(self, step: str, status: str, business: str) -> dict[str, Any]:
        stamp = now()
        task: dict[str, Any] = {
            "resourceType": "Task",
            "id": task_id(self.report_id, step),
            "identifier": [{"system": codes.WORKFLOW_SYSTEM, "value": f"{self.report_id}|{step}"}],
            "status": status,
            "businessStatus": {"text": business},
            "intent": "order",
            "code": codes.step_code(step),
            "focus": {"reference": f"DiagnosticReport/{self.report_id}"},
            "for": {"reference": f"Patient/{self.patient_id}"},
            "authoredOn": stamp,
        }
        if step != codes.CASE:
            task["partOf"] = [{"reference": f"Task/{task_id(self.report_id, codes.CASE)}"}]
        return task

    async def root(self, canonical: str | None, report: dict[str, Any] | None) -> dict[str, Any]:
        """The root Task, opened (``in-progress``) when the case has none yet."""
        found = await self.get(codes.CASE)
        if found is not None:
            return found
        task = self.new(codes.CASE, "in-progress", STARTED)
        if canonical is not None:
            task["instantiatesCanonical"] = canonical
        if report is not None and report.get("basedOn"):
            task["basedOn"] = report["basedOn"]  # the order (ServiceRequest) behind the case, if any
        return await self.save(task)

    async def step(self, step: str, status: str, business: str, output: list[dict[str, Any]] | None = None) -> bool:
        """Set a step's status; False when it was already so (nothing written: idempotent)."""
        task = await self.get(step) or self.new(step, status, business)
        extra = [o for o in output or [] if o not in task.get("output", [])]
        if task.get("meta") and task["status"] == status and task["businessStatus"]["text"] == business and not extra:
            return False
        task["status"], task["businessStatus"] = status, {"text": business}
        if extra:
            task["output"] = [*task.get("output", []), *extra][-MAX_INPUTS:]
        await self.save(task)
        return True


def recorded(task: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """The events of ``kind`` kept on a root Task (image events seen, events deferred while halted)."""
    return [json.loads(i["valueString"]) for i in task.get("input", []) if (i.get("type") or {}).get("text") == kind]


def record(task: dict[str, Any], kind: str, event: dict[str, Any]) -> bool:
    """Keep ``event`` on the root Task (once); False when it was there already."""
    if event in recorded(task, kind):
        return False
    entry = {"type": {"text": kind}, "valueString": json.dumps(event, sort_keys=True)}
    task["input"] = [*task.get("input", []), entry][-MAX_INPUTS:]
    return True


def forget(task: dict[str, Any], kind: str) -> None:
    task["input"] = [i for i in task.get("input", []) if (i.get("type") or {}).get("text") != kind]
    if not task["input"]:
        del task["input"]


def note(task: dict[str, Any], who: str, text: str) -> None:
    task["note"] = [*task.get("note", []), {"authorString": who[:200], "time": now(), "text": text[:1000]}]
