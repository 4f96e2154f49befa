"""A review Task is the operations' (``fhir_server.managed_content`` rule for Task).

A client's create, update, patch or delete (also in a Bundle) of a review Task (code
``urn:dermbridge:task|clinician-review``), judged on both the content asked for and the current version,
is refused with 409 naming the operations when it changes any element: its state (status,
businessStatus, owner, lease, declines, outputs), what it reviews (code/tier, focus, subject,
identifier) and how the queue orders it (``priority``, ``restriction``, ``authoredOn``) alike, and its
``note``/``description``, which the operations write with the reviewer's identity
(task.html#statemachine). Writing back the current content unchanged is not a change. The operations
write through a system context, which the rule does not bind.
"""

from __future__ import annotations

from typing import Any

from fhir_server.errors import conflict
from fhir_server.managed_content import Content
from fhir_server.workflow.review.codes import REVIEW_CODE, TASK_SYSTEM, codes_of, is_review_task

UNCOMPARED = ("resourceType", "id", "meta")  # kept or set by the server on every write
USE_OPERATIONS = (
    "a review Task is opened by the server and moved through its operations only: POST Task/{id}/$claim, "
    "$release, $decline or $complete (status, owner, priority, due date, notes and outputs are theirs)"
)


def is_review_request(resource: Content) -> bool:
    """A review Task, or any Task carrying the review code (a look-alike would enter the queue's searches)."""
    if not isinstance(resource, dict) or resource.get("resourceType") not in (None, "Task"):
        return False
    return is_review_task(resource) or REVIEW_CODE in codes_of(resource.get("code"), TASK_SYSTEM)


def _content(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k not in UNCOMPARED}


def review_state_rule(resource: Content, before: Content) -> None:
    if not (is_review_request(resource) or is_review_request(before)):
        return
    if resource is None or before is None or _content(resource) != _content(before):
        raise conflict(USE_OPERATIONS)
