"""Checks on client writes that need more than the content: the stored data and the caller's policy.

``managed_content`` rules see the content alone; a guard here also gets the transaction's reader and the
caller's ``AccessPolicy``, for rules such as "this identifier names something the server filed under
another patient". Packages above ``fhir_server`` register guards for the types they manage (the
composition root wires them, e.g. dicom_node's DICOM UID claims on ImagingStudy and Media), so this
package stays free of their knowledge (DESIGN.md, import direction). Like the rules, guards run for
token-bound repositories only; a guard raises an ``OperationOutcomeError`` to refuse.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fhir_server.security.policy import AccessPolicy
from fhir_server.storage.port import TenantReader

if TYPE_CHECKING:
    from fhir_server.repository import Repository

Content = dict[str, Any] | None
# (reader, policy, resource type, content to write (None: a deletion), current content (None: none))
Guard = Callable[[TenantReader, AccessPolicy, str, Content, Content], Awaitable[None]]
_GUARDS: dict[str, list[Guard]] = {}
# (the repository bound to the write's transaction, resource type, content to write): every type
ContentCheck = Callable[["Repository", str, dict[str, Any]], Awaitable[None]]
_CONTENT_CHECKS: list[ContentCheck] = []


def register_guard(resource_type: str, guard: Guard) -> None:
    """Adds a guard on client writes of ``resource_type`` (idempotent for the same function)."""
    guards = _GUARDS.setdefault(resource_type, [])
    if guard not in guards:
        guards.append(guard)


async def check_guarded_write(
    reader: TenantReader, policy: AccessPolicy, resource_type: str, resource: Content, before: Content
) -> None:
    """Raises when a guard refuses a client's write of ``resource_type``."""
    for guard in _GUARDS.get(resource_type, ()):
        await guard(reader, policy, resource_type, resource, before)


def register_content_check(check: ContentCheck) -> None:
    """Adds a check on client writes of every type, run after the guards (e.g. ``meta.profile`` claims)."""
    if check not in _CONTENT_CHECKS:
        _CONTENT_CHECKS.append(check)


async def check_content(repo: Repository, resource_type: str, resource: dict[str, Any]) -> None:
    """Raises when a content check refuses a client's write."""
    for check in _CONTENT_CHECKS:
        await check(repo, resource_type, resource)
