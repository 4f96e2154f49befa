"""HTTP of sign-in for people: ``/auth/authorize`` (GET: check, sign in, consent; POST: the consent
form), ``/auth/login``, ``/auth/logout``, ``/auth/session`` and ``/auth/launch`` (an EHR creates a launch
context, SMART App Launch 2.x app-launch.html#launch-app-ehr-launch).

The session cookie is HttpOnly, SameSite=Lax and Secure when the request came over https (RFC 6265bis).
Form posts carry a CSRF token: the sign-in form a double-submit cookie (there is no session yet), the
consent and sign-out forms their session's token (OWASP CSRF cheat sheet).
"""

from __future__ import annotations

import logging
import secrets
from typing import Any
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from fhir_server.api.auth_http import read_form
from fhir_server.audit.trail import AuditTrail
from fhir_server.errors import OperationOutcomeError
from fhir_server.people.audit import sign_in_event, sign_in_summary
from fhir_server.people.authorize import LAUNCH_SECONDS, AuthorizationRequest, AuthorizeError, Authorizer
from fhir_server.people.pages import consent_page, error_page, login_page
from fhir_server.people.provider_login import STATE_SECONDS, ProviderLogin, ProviderLoginError
from fhir_server.people.sessions import COOKIE, Session, Sessions
from fhir_server.people.signed_in import csrf_matches
from fhir_server.people.tickets import Tickets
from fhir_server.people.users import SignInRefused, User, UserDirectory
from fhir_server.security.bearer import Authenticator
from fhir_server.security.endpoint import OAuthError
from fhir_server.security.lockout import Lockout, RecordStrikes
from fhir_server.security.refusal_audit import RefusalAuditor
from fhir_server.security.refusals import RefusalGroup
from fhir_server.storage.port import Engine, TenantUnknownError

log = logging.getLogger(__name__)
LOGIN_CSRF = "dermbridge_login_csrf"
OIDC_BROWSER = "dermbridge_oidc_state"  # the pending provider sign-in, signed: bound to the browser that started it
FAILED = "Sign-in failed: the username, password or one-time code is wrong, or the account is locked or disabled."


class People:
    """What the sign-in routes need (``app.state.people``)."""

    def __init__(
        self,
        engine: Engine,
        users: UserDirectory,
        sessions: Sessions,
        authorizer: Authorizer,
        launches: Tickets,
        authenticator: Authenticator,
        audit: AuditTrail | None,
        default_tenant: str,
        lockout: Lockout | None = None,
    ) -> None:
        self.engine = engine
        self.users = users
        self.sessions = sessions
        self.authorizer = authorizer
        self.launches = launches
        self.authenticator = authenticator
        self.audit = audit
        self.default_tenant = default_tenant
        self.provider: ProviderLogin | None = None  # sign-in at the hospital's OpenID provider, when configured
        # failed sign-ins per (user, address) and per address, in the database (shared by every process): a
        # spray of many names from one address is slowed (the per-user lock of ``users`` is the other half)
        self.lockout = lockout or Lockout(book=RecordStrikes(engine, default_tenant))
        self.refusals: RefusalAuditor | None = None  # shared with the token endpoint (``AuthHttp.refusals``)

    async def record(self, tenant: str, event: dict[str, Any]) -> None:
        if self.audit is not None:
            await self.audit.record(await self.engine.tenant(tenant), event)

    def use_refusals(self, refusals: RefusalAuditor) -> None:
        self.refusals = refusals
        refusals.summaries["sign-in"] = sign_in_summary

    async def record_refusal(
        self, tenant: str, username: str, address: str, status: int, failure: str, fhir_user: str | None = None
    ) -> None:
        """Audit a refused sign-in, aggregated with the token refusals (:mod:`fhir_server.security.refusal_audit`):
        the first per (name, address, status) and window at once, the rest as one summary."""
        if self.refusals is None:
            return await self.record(tenant, _refusal_event(username, fhir_user, address, failure))

        def first(group: RefusalGroup) -> dict[str, Any]:
            own = group.client_id == username[:64]
            return _refusal_event(group.client_id, fhir_user if own else None, group.address, failure)

        await self.refusals.refused(RefusalGroup(tenant, username[:64], address, status, "sign-in"), failure, first)


def _refusal_event(username: str, fhir_user: str | None, address: str, failure: str) -> dict[str, Any]:
    return sign_in_event("login", username=username, fhir_user=fhir_user, address=address, failure=failure)


router = APIRouter(include_in_schema=False)


def _people(request: Request) -> People:
    people: People = request.app.state.people
    return people


def _address(request: Request) -> str:
    return request.client.host if request.client else ""


def safe_next(value: str | None) -> str:
    """A local path to go back to after sign-in: never another origin (no open redirect)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value or len(value) > 4000:
        return "/"
    return value


async def _session_form(
    request: Request, people: People, without_session: Response
) -> tuple[dict[str, str], Session] | Response:
    """A form posted within a session: its fields (less ``csrf``) and the session, or the answer to give
    (a bad form, ``without_session``, or 403 when the CSRF token is not the session's)."""
    try:
        form = await read_form(request)
    except OAuthError as error:
        return error_page(error.description)
    session = await people.sessions.current(request.cookies.get(COOKIE))
    if session is None:
        return without_session
    if not csrf_matches(form.pop("csrf", None), session.csrf):
        return error_page("the form has expired or did not come from this site (CSRF check)", 403)
    return form, session


def _set_cookie(request: Request, response: Response, name: str, value: str, max_age: int | None) -> None:
    response.set_cookie(
        name, value, max_age=max_age, path="/", httponly=True, samesite="lax", secure=request.url.scheme == "https"
    )


def _query(request: Request) -> dict[str, str]:
    return {k: v for k, v in request.query_params.items()}


def _login_redirect(tenant: str, next_url: str) -> RedirectResponse:
    return RedirectResponse(f"/auth/login?{urlencode({'tenant': tenant, 'next': next_url})}", 303)


async def _checked(people: People, params: dict[str, str]) -> AuthorizationRequest | Response:
    try:
        return await people.authorizer.check(params)
    except AuthorizeError as error:
        if error.redirect is None:
            return error_page(f"{error.error}: {error.description}")
        return RedirectResponse(error.location(), 302)


async def _approve(people: People, checked: AuthorizationRequest, session: Session) -> Response:
    try:
        return RedirectResponse(await people.authorizer.approve(checked, session.user), 303)
    except AuthorizeError as error:
        return RedirectResponse(error.location(), 303)


@router.get("/auth/authorize")
async def authorize(request: Request) -> Response:
    people = _people(request)
    if len(request.query_params.multi_items()) != len(request.query_params):
        return error_page("invalid_request: a parameter is repeated (RFC 6749 §3.1)")
    checked = await _checked(people, _query(request))
    if isinstance(checked, Response):
        return checked
    session = await people.sessions.current(request.cookies.get(COOKIE))
    if session is None or session.tenant != checked.client.tenant:
        return _login_redirect(checked.client.tenant, f"/auth/authorize?{request.url.query}")
    if checked.client.first_party:
        return await _approve(people, checked, session)
    granted = checked.granted(session.user)
    redirect = urlsplit(checked.redirect_uri)
    fields = {**checked.parameters(), "aud": request.query_params.get("aud", ""), "csrf": session.csrf}
    words = [*(str(s) for s in granted.resources), *granted.others]
    return consent_page(checked.client.name, words, fields, f"{redirect.scheme}://{redirect.netloc}")


@router.post("/auth/authorize")
async def consent(request: Request) -> Response:
    people = _people(request)
    posted = await _session_form(request, people, error_page("your session has ended: start again from the app", 401))
    if isinstance(posted, Response):
        return posted
    form, session = posted
    decision = form.pop("decision", "")
    checked = await _checked(people, form)
    if isinstance(checked, Response):
        return checked
    if session.tenant != checked.client.tenant:
        return error_page("you are signed in to another organisation", 403)
    if decision != "allow":
        return RedirectResponse(people.authorizer.deny(checked), 303)
    return await _approve(people, checked, session)


@router.get("/auth/login")
async def login_form(request: Request) -> Response:
    people = _people(request)
    csrf = secrets.token_urlsafe(32)
    tenant = request.query_params.get("tenant") or people.default_tenant
    response = login_page(
        tenant[:64], safe_next(request.query_params.get("next")), csrf, provider=people.provider is not None
    )
    _set_cookie(request, response, LOGIN_CSRF, csrf, 3600)
    return response


@router.post("/auth/login")
async def login(request: Request) -> Response:
    people = _people(request)
    try:
        form = await read_form(request)
    except OAuthError as error:
        return error_page(error.description)
    tenant, next_url = form.get("tenant") or people.default_tenant, safe_next(form.get("next"))
    if not csrf_matches(form.get("csrf"), request.cookies.get(LOGIN_CSRF)):
        return error_page("the sign-in form has expired or did not come from this site: reload it (CSRF check)", 403)
    try:
        await people.engine.tenant(tenant)
    except (TenantUnknownError, ValueError):
        return login_page(tenant[:64], next_url, form["csrf"], FAILED, 401)
    username, address = form.get("username", "")[:64], _address(request)
    async with people.users.turn(tenant, username):  # the throttle is read and settled before the next try
        refused = await _password_sign_in(request, people, tenant, username, address, form)
    if isinstance(refused, Response):
        return refused
    return await _signed_in(request, people, tenant, refused, next_url)


async def _password_sign_in(
    request: Request, people: People, tenant: str, username: str, address: str, form: dict[str, str]
) -> User | Response:
    """The user the form signs in, or the page refusing it (throttled: 429, refused: 401), with its audit."""
    next_url = safe_next(form.get("next"))
    throttle = f"user:{tenant[:64]}/{username.strip().lower()}"
    wait = await people.lockout.retry_after(throttle, address)
    if wait is not None:
        await people.record_refusal(
            tenant, username, address, 429, "sign-in refused: too many failed sign-ins from this address"
        )
        page = login_page(tenant[:64], next_url, form["csrf"], FAILED, 429)
        page.headers["Retry-After"] = str(wait)
        return page
    try:
        user = await people.users.authenticate(tenant, username, form.get("password", ""), form.get("code"))
    except SignInRefused as refused:
        await people.lockout.fail(throttle, address)
        known = await people.users.get(tenant, refused.username)
        failure = f"sign-in refused: {refused.reason}"
        await people.record_refusal(tenant, refused.username, address, 401, failure, known.fhir_user if known else None)
        return login_page(tenant[:64], next_url, form["csrf"], FAILED, 401)
    await people.lockout.succeed(throttle, address)
    return user


async def _signed_in(request: Request, people: People, tenant: str, user: User, next_url: str) -> Response:
    """A new session for ``user``: the cookie, the Login AuditEvent, back to ``next_url``."""
    secret = await people.sessions.open(tenant, user)
    await people.record(
        tenant, sign_in_event("login", username=user.username, fhir_user=user.fhir_user, address=_address(request))
    )
    response = RedirectResponse(safe_next(next_url), 303)
    _set_cookie(request, response, COOKIE, secret, int(people.sessions.lifetime))
    response.delete_cookie(LOGIN_CSRF, path="/")
    return response


@router.get("/auth/oidc/login")
async def provider_login(request: Request) -> Response:
    """Off to the hospital's OpenID provider (OpenID Connect Core §3.1.2.1)."""
    people = _people(request)
    if people.provider is None:
        return error_page("no OpenID provider is configured for sign-in", 404)
    tenant = request.query_params.get("tenant") or people.default_tenant
    try:
        await people.engine.tenant(tenant)
        location, pending = await people.provider.start(tenant, safe_next(request.query_params.get("next")))
    except (TenantUnknownError, ValueError):
        return error_page("unknown organisation", 404)
    except ProviderLoginError as error:
        log.warning("OpenID provider sign-in cannot start: %s", error)
        return error_page("the hospital's sign-in service cannot be reached; try again later", 502)
    response = RedirectResponse(location, 303)
    _set_cookie(request, response, OIDC_BROWSER, pending, STATE_SECONDS)
    return response


@router.get("/auth/oidc/callback")
async def provider_callback(request: Request) -> Response:
    """Back from the provider (OpenID Connect Core §3.1.2.5): the person it names signs in here."""
    people = _people(request)
    if people.provider is None:
        return error_page("no OpenID provider is configured for sign-in", 404)
    params = request.query_params
    if "error" in params or not params.get("code") or not params.get("state"):
        return error_page(f"the hospital's sign-in did not succeed: {params.get('error', 'no code')[:100]}", 400)
    try:
        browser = request.cookies.get(OIDC_BROWSER)
        identity = await people.provider.finish(params["code"][:2000], params["state"][:2000], browser)
    except ProviderLoginError as error:
        log.info("OpenID provider sign-in refused: %s", error)
        return error_page("the hospital's sign-in could not be checked; start again", 400)
    user = await people.users.by_subject(identity.tenant, identity.subject)
    if user is None or not user.active:
        failure = f"sign-in refused: the provider's subject {identity.subject[:100]!r} is no active user here"
        event = sign_in_event(
            "login",
            username=identity.subject,
            fhir_user=user.fhir_user if user else None,
            address=_address(request),
            failure=failure,
        )
        await people.record(identity.tenant, event)
        return error_page("your hospital account is not registered for DermBridge, or it is disabled", 403)
    response = await _signed_in(request, people, identity.tenant, user, identity.next_url)
    response.delete_cookie(OIDC_BROWSER, path="/")
    return response


@router.post("/auth/logout")
async def logout(request: Request) -> Response:
    people = _people(request)
    posted = await _session_form(request, people, RedirectResponse("/auth/login", 303))
    if isinstance(posted, Response):
        return posted
    _, session = posted
    await people.sessions.close(session.secret)
    event = sign_in_event(
        "logout", username=session.user.username, fhir_user=session.user.fhir_user, address=_address(request)
    )
    await people.record(session.tenant, event)
    response = RedirectResponse(f"/auth/login?tenant={session.tenant}", 303)
    response.delete_cookie(COOKIE, path="/")
    return response


@router.get("/auth/session")
async def current_session(request: Request) -> Response:
    """Who is signed in, and the session's CSRF token for its form posts (for pages and scripts of this origin,
    which alone get the cookie: SameSite=Lax, no credentialed CORS): 401 without a live session."""
    session = await _people(request).sessions.current(request.cookies.get(COOKIE))
    if session is None:
        return JSONResponse({"error": "not signed in"}, 401, headers={"Cache-Control": "no-store"})
    body = {
        "tenant": session.tenant,
        "username": session.user.username,
        "fhirUser": session.user.fhir_user,
        "roles": list(session.user.roles),
        "expires": int(session.expires),
        "csrf": session.csrf,
    }
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


@router.post("/auth/launch")
async def create_launch(request: Request) -> Response:
    """An EHR's launch context: its token's tenant, the ``patient`` it opens the app for (it must exist) and
    optionally the ``client_id`` of the only app that may use it; the ``launch`` value to pass to the app
    (valid for 5 minutes, once). Needs a token that may read Patients (``system/`` or ``user/``)."""
    people = _people(request)
    try:
        form = await read_form(request)
        tenant = form.get("tenant", "")
        try:
            access = await people.authenticator.access(request.headers.get("authorization"), tenant, _address(request))
        except OperationOutcomeError as exc:  # no usable token for that tenant
            raise OAuthError(401, "invalid_token", "a bearer token of this tenant is needed") from exc
        if access is not None and access.decide("Patient", "r") != "all":
            raise OAuthError(403, "insufficient_scope", "creating a launch context needs Patient read scope")
        patient, client_id = form.get("patient", ""), form.get("client_id")
        if not patient or len(patient) > 64 or (client_id is not None and not 0 < len(client_id) <= 200):
            raise OAuthError(400, "invalid_request", "patient (a Patient id) is required; client_id is optional")
        try:
            found = await (await people.engine.tenant(tenant)).read("Patient", patient)
        except (TenantUnknownError, ValueError) as exc:
            raise OAuthError(400, "invalid_request", "unknown tenant") from exc
        if found is None or found.deleted:
            raise OAuthError(400, "invalid_request", f"there is no Patient {patient}")
    except OAuthError as error:
        return JSONResponse(error.body(), error.status, headers={"Cache-Control": "no-store"})
    context = {"patient": patient, **({"client_id": client_id} if client_id else {})}
    launch = await people.launches.issue(tenant, context, LAUNCH_SECONDS)
    return JSONResponse({"launch": launch, "expires_in": LAUNCH_SECONDS}, headers={"Cache-Control": "no-store"})
