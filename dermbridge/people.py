"""Wiring of sign-in for people (``fhir_server.people``): the user directory, sessions, the authorization
endpoint and the authorization-code and refresh-token grants of the token endpoint."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from dermbridge.settings import Settings
from fhir_server.audit.trail import AuditTrail
from fhir_server.people.authorize import Authorizer
from fhir_server.people.code_exchange import CodeExchange
from fhir_server.people.provider_login import ProviderLogin
from fhir_server.people.routes import People
from fhir_server.people.routes import router as people_router
from fhir_server.people.sessions import Sessions
from fhir_server.people.signed_in import SignInRequired
from fhir_server.people.tickets import Tickets
from fhir_server.people.users import UserDirectory
from fhir_server.reviewer_app.admin_routes import router as admin_router
from fhir_server.reviewer_app.administrator import NotAdministrator, not_administrator_page
from fhir_server.reviewer_app.live import WorklistChanges
from fhir_server.reviewer_app.live import router as worklist_events_router
from fhir_server.reviewer_app.routes import router as reviewer_app_router
from fhir_server.security.bearer import Authenticator
from fhir_server.security.clients import ClientRegistry
from fhir_server.security.endpoint import TokenEndpoint
from fhir_server.security.keyfile import read_or_create_secret
from fhir_server.storage.port import Engine


def install_people(
    app: FastAPI,
    settings: Settings,
    engine: Engine,
    clients: ClientRegistry,
    endpoint: TokenEndpoint,
    authenticator: Authenticator,
    audit: AuditTrail | None,
) -> None:
    users = UserDirectory(engine)
    authenticator.user_revoked = users.revoked  # a disabled user's tokens stop working at once
    codes = Tickets(engine, "auth.code")
    launches = Tickets(engine, "auth.launch")
    CodeExchange(
        endpoint, users, codes, Tickets(engine, "auth.refresh"), settings.auth_refresh_lifetime_seconds
    ).register()
    sessions = Sessions(engine, users, settings.auth_session_lifetime_seconds)
    authorizer = Authorizer(clients, launches, codes, settings.base_url())
    app.state.people = People(
        engine,
        users,
        sessions,
        authorizer,
        launches,
        authenticator,
        audit,
        settings.default_tenant,
        lockout=endpoint.lockout,  # one count of failures per address, with the token endpoint
    )
    if settings.oidc_issuer and settings.oidc_login_client_id:
        app.state.people.provider = ProviderLogin(
            settings.oidc_issuer,
            settings.oidc_login_client_id,
            settings.oidc_login_client_secret,
            f"{settings.base_url()}/auth/oidc/callback",
            read_or_create_secret(settings.data_dir / "keys" / "oidc-state.key", 32),
        )
    app.include_router(people_router)
    app.include_router(reviewer_app_router)  # the reviewer app at /app/ (its pages need a session)
    app.state.worklist_changes = WorklistChanges(engine)
    app.include_router(worklist_events_router)  # its worklist's live update (server-sent events)
    app.include_router(admin_router)  # its admin pages at /app/admin/ (the admin role)

    @app.exception_handler(NotAdministrator)
    async def on_not_administrator(request: Request, exc: NotAdministrator) -> Response:
        return not_administrator_page(exc)

    @app.exception_handler(SignInRequired)
    async def on_sign_in_required(request: Request, exc: SignInRequired) -> Response:
        return RedirectResponse(f"/auth/login?{urlencode({'next': exc.next_url})}", 303)
