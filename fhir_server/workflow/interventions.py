"""Interventions on a running case (issue 14): operations on the case's root Task, each with a reason, and
recorded with who and why (a ``Task.note`` on the root; the REST layer's AuditEvent names the caller too).

- ``$halt``: ``on-hold``; events of the case that come meanwhile are kept on the root Task, nothing runs.
- ``$resume``: ``in-progress``; the kept events are appended again (``workflow.resumed``) and run.
- ``$cancel``: ``cancelled`` with its open steps; later events of the case run nothing.
- ``$supersede``: as cancel, naming the case that replaces it (``replacedBy``, a DiagnosticReport).
- ``$retry``: the named step (``step``, a ``urn:dermbridge:workflow-step`` code) runs again: its Task is
  closed and the case's image events are appended again (the AI worker redoes only what is missing).
Access: ``u`` on Task through the repository's AccessPolicy (a user/ or system/ scope).
"""

from __future__ import annotations

from typing import Any

from fhir_server.api.messages import FhirRequest, FhirResponse
from fhir_server.api.parameters import named_values, one_of
from fhir_server.errors import bad_request, conflict, forbidden, unprocessable
from fhir_server.repository import Repository
from fhir_server.workflow import codes, tree
from fhir_server.workflow.events import INSTANCE_STORED, RESUMED

MAX_REASON = 1000
OPEN_STEPS = ("requested", "ready", "in-progress", "on-hold", "accepted")
NAMES = ("halt", "resume", "cancel", "supersede", "retry")


def _text(given: list[tuple[str, Any]], name: str) -> str:
    value = one_of(given, name)
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_REASON:
        raise bad_request(f"${name}: a {name} (a string of 1 to {MAX_REASON} characters) is required", [name])
    return value.strip()


def _who(request: FhirRequest) -> str:
    return request.access.subject if request.access is not None else "(authentication disabled)"


class Intervention:
    def __init__(self, repo: Repository, request: FhirRequest, id: str, name: str) -> None:
        if repo.policy.decide("Task", "u") != "all":
            raise forbidden(f"${name} needs a user/ or system/ scope with write access to Task")
        self.repo, self.request, self.id, self.name = repo, request, id, name
        self.given = named_values(request)
        self.reason = _text(self.given, "reason")
        self.who = _who(request)

    async def root(self, repo: Repository) -> dict[str, Any]:
        task = (await repo.read("Task", self.id)).resource
        steps = [c.get("code") for c in (task.get("code") or {}).get("coding") or [] if isinstance(c, dict)]
        if codes.CASE not in steps or "partOf" in task:
            raise unprocessable(f"${self.name} is invoked on a case's root workflow Task (code {codes.CASE})")
        return task


async def _steps(repo: Repository, root: dict[str, Any]) -> list[dict[str, Any]]:
    found = await repo.find("Task", [("part-of", f"Task/{root['id']}")], 50)
    return [s.resource for s in found]


async def _close_steps(repo: Repository, root: dict[str, Any], business: str) -> None:
    for step in await _steps(repo, root):
        if step["status"] in OPEN_STEPS:
            step.update(status="cancelled", businessStatus={"text": business}, lastModified=tree.now())
            await repo.update(step, resource_type="Task", id=str(step["id"]), server_built=True)


async def _save(repo: Repository, task: dict[str, Any]) -> FhirResponse:
    task["lastModified"] = tree.now()
    return FhirResponse(200, (await repo.update(task, resource_type="Task", id=str(task["id"]))).resource)


async def intervene(repo: Repository, request: FhirRequest, resource_type: str | None, id: str | None) -> FhirResponse:
    """``POST Task/{id}/$halt|$resume|$cancel|$supersede|$retry`` with a ``reason`` parameter."""
    assert id is not None
    name = request.path[-1].removeprefix("$")
    act = Intervention(repo, request, id, name)
    async with repo.store.transaction() as tx:
        bound = repo.within(tx)
        root = await act.root(bound)  # read with the caller's access; written by the server (guard.py)
        system = Repository.system(repo.store, reason=f"${name} on Task/{id}", local_base=repo.local_base, tx=tx)
        status = root["status"]
        if name == "halt":
            if status not in ("requested", "in-progress"):
                raise conflict(f"the case's workflow is {status}: only a running one can be halted")
            root["status"] = "on-hold"
        elif name == "resume":
            if status != "on-hold":
                raise conflict(f"the case's workflow is {status}: only a halted one can be resumed")
            for event in tree.recorded(root, tree.DEFERRED):
                await tx.append_event(RESUMED, {"topic": event["topic"], "payload": event["payload"]})
            tree.forget(root, tree.DEFERRED)
            root["status"] = "in-progress"
        elif name in ("cancel", "supersede"):
            if status in ("cancelled", "completed", "failed"):
                raise conflict(f"the case's workflow is {status} already")
            detail = await _replacement(act, bound) if name == "supersede" else ""
            await _close_steps(system, root, f"{name}led: {act.reason}" if name == "cancel" else f"superseded{detail}")
            root.update(status="cancelled", businessStatus={"text": "cancelled" if name == "cancel" else
                                                            f"superseded{detail}"})  # fmt: skip
        else:
            await _retry(act, system, root)
        tree.note(root, act.who, f"{name}: {act.reason}")
        root["statusReason"] = {"text": f"{name} by {act.who}: {act.reason}"[:1000]}
        return await _save(system, root)


async def _replacement(act: Intervention, repo: Repository) -> str:
    value = one_of(act.given, "replacedBy")
    reference = value.get("reference") if isinstance(value, dict) else value
    if not isinstance(reference, str) or not reference.startswith("DiagnosticReport/"):
        raise bad_request("$supersede: replacedBy (a Reference to the DiagnosticReport of the newer case)",
                          ["replacedBy"])  # fmt: skip
    await repo.read("DiagnosticReport", reference.removeprefix("DiagnosticReport/"))
    return f" by {reference}"


async def _retry(act: Intervention, repo: Repository, root: dict[str, Any]) -> None:
    step = _text(act.given, "step")
    if step not in codes.STEPS:
        raise bad_request(f"$retry: step is one of {sorted(codes.STEPS)}", ["step"])
    if root["status"] in ("on-hold", "cancelled"):
        raise conflict(f"the case's workflow is {root['status']}: resume it first, or start a new case")
    task = next((t for t in await _steps(repo, root) if t["code"]["coding"][0]["code"] == step), None)
    if task is None:
        raise unprocessable(f"the case has no {step} step to retry")
    task.update(status="cancelled", businessStatus={"text": f"retry requested: {act.reason}"}, lastModified=tree.now())
    await repo.update(task, resource_type="Task", id=str(task["id"]), server_built=True)
    assert repo.transaction is not None
    for event in tree.recorded(root, tree.IMAGE_EVENT):
        await repo.transaction.append_event(INSTANCE_STORED, {**event, "requeued": True})
    root["status"] = "in-progress"


def _operation(code: str, description: str, extra: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "resourceType": "OperationDefinition",
        "id": f"Task-{code}",
        "url": f"urn:dermbridge:OperationDefinition/Task-{code}",
        "name": code.capitalize(),
        "status": "active",
        "kind": "operation",
        "description": description,
        "code": code,
        "resource": ["Task"],
        "system": False,
        "type": False,
        "instance": True,
        "affectsState": True,
        "parameter": [
            {"name": "reason", "use": "in", "min": 1, "max": "1", "type": "string"},
            *(extra or []),
            {"name": "return", "use": "out", "min": 1, "max": "1", "type": "Task"},
        ],
    }


DEFINITIONS = {
    "halt": _operation("halt", "Halts a case's workflow (root Task on-hold): its events wait until $resume."),
    "resume": _operation("resume", "Resumes a halted case's workflow; the events that came meanwhile run."),
    "cancel": _operation("cancel", "Cancels a case's workflow and its open steps."),
    "supersede": _operation("supersede", "Cancels a case's workflow because a newer case replaces it.",
                            [{"name": "replacedBy", "use": "in", "min": 1, "max": "1", "type": "Reference"}]),
    "retry": _operation("retry", "Runs a step of a case's workflow again (its image events are queued again).",
                        [{"name": "step", "use": "in", "min": 1, "max": "1", "type": "code"}]),
}  # fmt: skip
