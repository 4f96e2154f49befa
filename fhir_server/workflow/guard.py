"""A case's workflow Task tree is the engine's and its interventions' (``fhir_server.managed_content`` rule).

The root Task keeps the case's recorded events in its ``input`` and ``$resume``/``$retry`` re-emit them, so
a client's create, update, patch or delete (also in a Bundle) of a workflow Task (code system
``urn:dermbridge:workflow-step``, identifier system ``urn:dermbridge:workflow`` or an id ``wf-*``), judged on
both the content asked for and the current version, is refused with 409 naming the operations
(task.html#statemachine: the state machine is driven by the operations only). The engine and the
interventions write through a system context, which the rule does not bind.
"""

from __future__ import annotations

from typing import Any

from fhir_server.errors import conflict
from fhir_server.managed_content import Content
from fhir_server.workflow.codes import STEP_SYSTEM, WORKFLOW_SYSTEM

USE_OPERATIONS = (
    "a workflow Task (a case's root or step Task) is written by the server's workflow only: use "
    "POST Task/{id}/$halt, $resume, $cancel, $supersede or $retry"
)


def _systems(values: Any) -> set[str]:
    return {str(v.get("system")) for v in values if isinstance(v, dict)} if isinstance(values, list) else set()


def is_workflow_task(resource: Content) -> bool:
    """A Task of a case's tree: by its step code, its tree identifier or its deterministic id."""
    if not isinstance(resource, dict):
        return False
    code = resource.get("code")
    codings = code.get("coding") if isinstance(code, dict) else None
    return (
        STEP_SYSTEM in _systems(codings)
        or WORKFLOW_SYSTEM in _systems(resource.get("identifier"))
        or str(resource.get("id") or "").startswith("wf-")
    )


def workflow_task_rule(resource: Content, before: Content) -> None:
    """Refuses every client write touching a workflow Task (new content or current version)."""
    if is_workflow_task(resource) or is_workflow_task(before):
        raise conflict(USE_OPERATIONS)
