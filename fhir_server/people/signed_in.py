"""What server-rendered web pages use to know who is signed in and to act on the FHIR API as them.

- ``signed_in_user(request) -> Principal``: a FastAPI dependency backed by the session cookie. Without a
  live session it raises :class:`SignInRequired`, which the app answers with a redirect to
  ``/auth/login?next=<the page>`` (HTML pages) — see ``dermbridge/app.py``.
- ``Principal.access``: the same :class:`~fhir_server.security.scopes.Access` a SMART token of that user
  would carry (``fhirUser`` = ``Practitioner/<id>``, the scopes of the user's roles in the ``user/``
  context), so every decision is made by the one :class:`~fhir_server.security.policy.AccessPolicy` under
  the repository, reviewer eligibility included.
- ``fhir_as(request, principal, method, path, params, body)``: one FHIR interaction through the server's
  own router and repository, audited with the user as agent — exactly what the REST API would do with
  that user's token, with no second access-decision path.
- ``csrf_ok(principal, form_value)``: the session's CSRF token check for a page's form post.

Example (a page of the web app)::

    @router.get("/app/worklist")
    async def worklist(request: Request, me: SignedInUser) -> Response:
        tasks = await fhir_as(request, me, "GET", ["Task"], [("status", "ready")])
        ...
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from fhir_server.api.http import FhirHttp
from fhir_server.api.messages import FhirRequest, FhirResponse
from fhir_server.audit.audited_writes import AuditedWrites
from fhir_server.audit.events import patient_of, rest_event
from fhir_server.errors import OperationOutcomeError
from fhir_server.people.sessions import COOKIE, Session
from fhir_server.people.user_grant import as_user
from fhir_server.repository import Repository
from fhir_server.security.policy import AccessPolicy
from fhir_server.security.scopes import Access, role_scopes

WEB_CLIENT = "dermbridge-web"  # the client named in the AuditEvents of pages acting for a signed-in user


class SignInRequired(Exception):
    """No live session: the page should send the person to ``/auth/login?next=...``."""

    def __init__(self, next_url: str) -> None:
        super().__init__("sign-in required")
        self.next_url = next_url


@dataclass(frozen=True, slots=True)
class Principal:
    """A signed-in person: their session and what they may do."""

    session: Session

    @property
    def tenant(self) -> str:
        return self.session.tenant

    @property
    def username(self) -> str:
        return self.session.user.username

    @property
    def fhir_user(self) -> str:
        return self.session.user.fhir_user

    @property
    def csrf(self) -> str:
        """The value a page's forms carry in a hidden ``csrf`` field."""
        return self.session.csrf

    @property
    def access(self) -> Access:
        user = self.session.user
        scopes = tuple(as_user(role_scopes(user.roles)))
        return Access(self.tenant, WEB_CLIENT, scopes, roles=user.roles, fhir_user=user.fhir_user)


def csrf_matches(expected: str | None, given: str | None) -> bool:
    """Whether a form's CSRF token is the expected one (constant time; an empty token never matches)."""
    return bool(expected) and bool(given) and hmac.compare_digest((expected or "").encode(), (given or "").encode())


def csrf_ok(principal: Principal, value: str | None) -> bool:
    return csrf_matches(principal.csrf, value)


async def signed_in_user(request: Request) -> Principal:
    """The person whose live session the request's cookie names; :class:`SignInRequired` otherwise."""
    session = await request.app.state.people.sessions.current(request.cookies.get(COOKIE))
    if session is None:
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInRequired(path)
    return Principal(session)


async def session_access(request: Request, tenant: str) -> Access | None:
    """The access of the person whose session cookie the request carries, for reads of ``tenant`` only
    (DICOMweb renderings shown in the reviewer app's pages; SameSite=Lax keeps other sites' posts out)."""
    people = getattr(request.app.state, "people", None)
    if people is None or request.method not in ("GET", "HEAD"):
        return None
    session = await people.sessions.current(request.cookies.get(COOKIE))
    return Principal(session).access if session is not None and session.tenant == tenant else None


SignedInUser = Annotated[Principal, Depends(signed_in_user)]


async def fhir_as(
    request: Request,
    principal: Principal,
    method: str,
    path: list[str],
    params: list[tuple[str, str]] | None = None,
    body: Any = None,
) -> FhirResponse:
    """One FHIR interaction as ``principal``, through the router and the repository's AccessPolicy,
    audited like the REST API's (its AuditEvent names the user). Errors come back as their outcome."""
    fhir: FhirHttp = request.app.state.fhir_http
    store = await fhir.engine.tenant(principal.tenant)
    base_url = str(request.base_url).rstrip("/") + f"/fhir/{principal.tenant}"
    audited = AuditedWrites(store, fhir.audit) if fhir.audit is not None else None
    repo = Repository(
        audited.store if audited is not None else store,
        AccessPolicy.of(principal.access),
        local_base=base_url,
        default_count=fhir.default_count,
        max_count=fhir.max_count,
    )
    params = params or []
    address = request.client.host if request.client else None

    def event(status: int, entity: str | None, answer: Any) -> dict[str, Any]:
        assert fhir.audit is not None
        return rest_event(
            method=method,
            path=path,
            params=params,
            status=status,
            who=WEB_CLIENT,
            address=address,
            entity=entity,
            patient=patient_of(path, params, answer),
            query_key=fhir.audit.signer.query_key,
            fhir_user=principal.fhir_user,
        )

    entity = f"{path[0]}/{path[1]}" if len(path) >= 2 and not path[1].startswith(("$", "_")) else None
    if audited is not None:
        audited.describe = lambda first: event(200, entity or f"{first.resource_type}/{first.id}", None)
    fhir_request = FhirRequest(
        method=method, path=path, params=params, headers={}, body=body, base_url=base_url, access=principal.access
    )
    try:
        response = await fhir.router.dispatch(repo, fhir_request)
    except OperationOutcomeError as error:
        response = FhirResponse(error.status, error.outcome, dict(error.headers))
    if fhir.audit is not None and not (audited is not None and audited.recorded):
        await fhir.audit.record(store, event(response.status, entity, response.body))
    return response
