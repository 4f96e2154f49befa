"""A review Task's state is the operations' (``fhir_server.managed_content`` rule for Task).

A client's create, update, patch or delete (also in a Bundle) that would make a review Task, move one
(status, businessStatus, owner, lease, declines, outputs, execution period) or change what it reviews
(code/tier, focus, subject, identifier) is refused with 409 naming the operations. Other elements (a
``note``, a ``description``) stay writable. The operations write through a system context, which the
rule does not bind.
"""

from __future__ import annotations

from fhir_server.errors import conflict
from fhir_server.managed_content import Content
from fhir_server.workflow.review.codes import is_review_task

MANAGED = (
    "status",
    "businessStatus",
    "owner",
    "extension",
    "output",
    "code",
    "focus",
    "for",
    "identifier",
    "executionPeriod",
)
USE_OPERATIONS = (
    "a review Task is opened by the server and moved through its operations only: POST Task/{id}/$claim, "
    "$release, $decline or $complete (status, owner, businessStatus, lease, declines and outputs are theirs)"
)


def review_state_rule(resource: Content, before: Content) -> None:
    if not (is_review_task(resource) or is_review_task(before)):
        return
    if resource is None:
        raise conflict(USE_OPERATIONS)
    current = before or {}
    if any(current.get(k) != resource.get(k) for k in MANAGED):
        raise conflict(USE_OPERATIONS)
