"""Who may use the admin pages: a signed-in person holding the ``admin`` role. Their pages act with the
role's own ``system/`` scopes (not the ``user/`` form a person's token gets), so the one check that guards
every tenant configuration, :func:`fhir_server.security.admin.require_admin`, decides here too; a reviewer
is refused by it with 403. Every change an administrator makes is written as an AuditEvent naming them
(DICOM PS3.15 A.5.3.11 "Security Alert", subtype Security / Software Configuration)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from starlette.responses import HTMLResponse

from fhir_server.errors import OperationOutcomeError
from fhir_server.people.signed_in import WEB_CLIENT, Principal, signed_in_user
from fhir_server.reviewer_app.rendering import problem
from fhir_server.security.admin import require_admin
from fhir_server.security.scopes import Access, role_scopes
from fhir_server.tenant_settings import setting_event


class NotAdministrator(Exception):
    """A signed-in person without the admin role opened an admin page (answered 403 with a page)."""

    def __init__(self, message: str, principal: Principal) -> None:
        super().__init__(message)
        self.message = message
        self.principal = principal


@dataclass(frozen=True, slots=True)
class Administrator(Principal):
    """A signed-in person acting as the tenant's administrator."""

    @property
    def access(self) -> Access:
        user = self.session.user
        scopes = tuple(role_scopes(user.roles))  # the system/ context of the roles, as an admin client's
        return Access(self.tenant, WEB_CLIENT, scopes, roles=user.roles, fhir_user=user.fhir_user)


async def administrator(request: Request) -> Administrator:
    """The signed-in person, if the admin check lets them configure the tenant; :class:`NotAdministrator`."""
    me = await signed_in_user(request)
    admin = Administrator(me.session)
    try:
        require_admin(admin.access, "the admin pages")
    except OperationOutcomeError as refused:
        raise NotAdministrator(str(refused.outcome["issue"][0].get("diagnostics")), me) from refused
    if "admin" not in admin.access.roles:  # integration has the same scopes, but is a system's role, not a person's
        raise NotAdministrator("the admin pages need the admin role", me)
    return admin


def not_administrator_page(refused: NotAdministrator) -> HTMLResponse:
    """403 with a page saying why (the admin check's words) and the way back to the worklist."""
    me = refused.principal
    user = {"username": me.username, "fhir_user": me.fhir_user, "csrf": me.csrf}
    said = f"These pages are for the organisation's administrators: {refused.message}."
    return problem("Administrators only", said, 403, user=user)


SignedInAdministrator = Annotated[Administrator, Depends(administrator)]


async def record_change(
    request: Request, admin: Administrator, setting: str, subtype: dict[str, str], said: str
) -> None:
    """The AuditEvent of one admin change: what changed, by whom (the person and their Practitioner)."""
    fhir = request.app.state.fhir_http
    if fhir.audit is None:
        return
    event: dict[str, Any] = setting_event(setting, subtype, admin.username, said)
    event["agent"][0]["who"] = (
        {"reference": admin.fhir_user, "display": admin.username} if admin.fhir_user else {"display": admin.username}
    )
    event["agent"][0]["altId"] = WEB_CLIENT
    store = await fhir.engine.tenant(admin.tenant)
    await fhir.audit.record(store, event)
