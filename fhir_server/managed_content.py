"""Content only the server's own operations write (a rule table the repository consults).

Some elements record what an operation did, with who and why, and must not be forged or undone by a
plain create, update, patch or delete from a client: a legal-hold ``Flag`` (``$legal-hold``), the
``Patient.link`` of a merge (``Patient/$merge``), and whatever later sub-packages register here (e.g.
a review ``Task``'s state, moved by its operations only). A rule sees the content a client asks to
write (``None`` for a deletion) and the current version's content (``None`` when there is none) and
raises an ``OperationOutcomeError`` to refuse. Rules run for token-bound repositories only: the
operations themselves write through a named system context (``Repository.system``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fhir_server.errors import OperationOutcomeError, conflict
from fhir_server.retention.holds import is_hold

Content = dict[str, Any] | None
Rule = Callable[[Content, Content], None]

MANAGED_LINKS = frozenset({"replaces", "replaced-by"})  # Patient.link written by $merge only
_RULES: dict[str, list[Rule]] = {}


def register(resource_type: str, rule: Rule) -> None:
    """Adds a rule for writes of ``resource_type`` by clients (idempotent for the same function)."""
    rules = _RULES.setdefault(resource_type, [])
    if rule not in rules:
        rules.append(rule)


def check_client_write(resource_type: str, resource: Content, before: Content) -> None:
    """Raises when a client's write (``resource`` None: a deletion) would touch server-managed content."""
    for rule in _RULES.get(resource_type, ()):
        rule(resource, before)


def _legal_hold(resource: Content, before: Content) -> None:
    """A legal-hold Flag is placed and released by its operations only, which keep who and why."""
    if is_hold(resource) or is_hold(before):
        raise conflict("a legal hold is placed and released by $legal-hold and $release-legal-hold only")


def _managed_links(resource: Content) -> list[tuple[str, str]]:
    links = (resource or {}).get("link") or []
    found = [
        (str(link.get("type")), str((link.get("other") or {}).get("reference")))
        for link in links
        if isinstance(link, dict) and link.get("type") in MANAGED_LINKS
    ]
    return sorted(found)


def _merge_links(resource: Content, before: Content) -> None:
    """``Patient.link`` of type ``replaces``/``replaced-by`` records a merge (patient-operation-merge.html):
    written by ``$merge`` in a system context only, since ``$erase`` follows them to the merged records.
    A deletion leaves the links as they were, so it is not this rule's business."""
    if resource is not None and _managed_links(resource) != _managed_links(before):
        raise OperationOutcomeError.of(
            422, "business-rule", "Patient.link of type replaces/replaced-by is written by Patient/$merge only"
        )


register("Flag", _legal_hold)
register("Patient", _merge_links)
