"""The OAuth2 HTTP endpoints: ``/auth/token``, ``/.well-known/jwks.json`` and each tenant's
``/fhir/{tenant}/.well-known/smart-configuration`` (SMART App Launch 2.x, conformance)."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from fhir_server.audit.events import token_event
from fhir_server.audit.trail import AuditTrail
from fhir_server.security.bearer import Authenticator
from fhir_server.security.caller_note import note_client
from fhir_server.security.clients import tenant_of
from fhir_server.security.endpoint import ASSERTION_ALGORITHMS, OAuthError, TokenEndpoint, TokenRequest
from fhir_server.security.refusal_audit import RefusalAuditor, summarised
from fhir_server.security.refusals import RefusalGroup, RefusalSummary
from fhir_server.security.scopes import ROLES
from fhir_server.storage.port import Engine, TenantStore, TenantUnknownError

log = logging.getLogger(__name__)
MAX_TOKEN_REQUEST_BYTES = 64 * 1024
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class AuthHttp:
    """What the auth endpoints need; ``endpoint`` is None in the insecure development mode."""

    def __init__(
        self,
        engine: Engine,
        authenticator: Authenticator,
        endpoint: TokenEndpoint | None,
        audit: AuditTrail | None,
        default_tenant: str,
        public_url: str,
    ) -> None:
        self.engine = engine
        self.authenticator = authenticator
        self.endpoint = endpoint
        self.audit = audit
        self.default_tenant = default_tenant
        self.public_url = public_url.rstrip("/")
        # refused token requests and sign-ins (``fhir_server.people``), aggregated per window
        self.refusals = RefusalAuditor(self.record)
        self.refusals.summaries["token"] = summary_event

    async def _store(self, tenant: str | None) -> TenantStore:
        try:
            return await self.engine.tenant(tenant or self.default_tenant)
        except (TenantUnknownError, ValueError):
            return await self.engine.tenant(self.default_tenant)

    async def record(self, tenant: str | None, event: dict[str, Any]) -> None:
        """Audit a token event in the client's tenant (the default tenant when the client is unknown)."""
        if self.audit is not None:
            await self.audit.record(await self._store(tenant), event)

    async def record_refusal(self, client_id: str, address: str, error: OAuthError) -> None:
        """Audit a refused token request, aggregated (:mod:`fhir_server.security.refusal_audit`)."""
        if self.audit is None:
            return
        store = await self._store(tenant_of(client_id))
        reason = error.description

        def first(group: RefusalGroup) -> dict[str, Any]:
            return token_event(client_id=group.client_id, status=error.status, address=group.address, reason=reason)

        await self.refusals.refused(RefusalGroup(store.name, client_id, address, error.status), reason, first)

    async def record_summaries(self, everything: bool = False) -> None:
        """Audit the refusals counted in the windows that have closed (all of them with ``everything``)."""
        await self.refusals.run(everything)

    async def start(self) -> None:
        """Write refusal summaries as their windows close, even when no further request comes."""
        self.refusals.start()

    async def close(self) -> None:
        await self.refusals.stop()


def summary_event(summary: RefusalSummary) -> dict[str, Any]:
    """One AuditEvent for ``summary.count`` refused token requests of one group, over their period."""
    group = summary.group
    event = token_event(client_id=group.client_id, status=group.status, address=group.address, reason=None)
    return summarised(event, summary, "token requests")


router = APIRouter(include_in_schema=False)


def _auth(request: Request) -> AuthHttp:
    auth: AuthHttp = request.app.state.auth_http
    return auth


def _oauth_error(error: OAuthError) -> Response:
    headers = dict(_NO_STORE)
    if error.retry_after is not None:
        headers["Retry-After"] = str(error.retry_after)
    if error.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="dermbridge"'
    return JSONResponse(error.body(), error.status, headers=headers)


async def read_form(request: Request) -> dict[str, str]:
    """A posted form (the token request, the sign-in pages' and the reviewer app's forms): urlencoded, bounded,
    each field once (RFC 6749 section 3.2: parameters must not be repeated)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise OAuthError(400, "invalid_request", "send the form as application/x-www-form-urlencoded")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_TOKEN_REQUEST_BYTES:
            raise OAuthError(413, "invalid_request", "the form is too large")
    try:
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except (UnicodeDecodeError, ValueError) as exc:
        raise OAuthError(400, "invalid_request", "the form is not valid") from exc
    form: dict[str, str] = {}
    for key, value in pairs:
        if key in form:
            raise OAuthError(400, "invalid_request", f"the parameter {key} is repeated")
        form[key] = value
    return form


@router.post("/auth/token")
async def token(request: Request) -> Response:
    auth = _auth(request)
    if auth.endpoint is None:
        return JSONResponse({"error": "invalid_request", "error_description": "authentication is disabled"}, 404)
    address = request.client.host if request.client else "unknown"
    claimed: str | None = None
    try:
        form = await read_form(request)
        claimed = form.get("client_id")
        urls = (f"{auth.public_url}/auth/token", str(request.url.replace(query="")))
        issued = await auth.endpoint.handle(TokenRequest(form, request.headers.get("authorization"), address, urls))
    except OAuthError as error:
        log.info("token refused: %s (%s)", error.error, error.status)
        await auth.record_refusal(error.client_id or claimed or "", address, error)
        return _oauth_error(error)
    client = issued.client
    note_client(client.client_id)
    await auth.record(client.tenant, token_event(client_id=client.client_id, status=200, address=address, reason=None))
    return JSONResponse(issued.body, headers=_NO_STORE)


@router.get("/.well-known/jwks.json")
async def jwks(request: Request) -> Response:
    tokens = _auth(request).authenticator.tokens
    return JSONResponse(tokens.jwks() if tokens is not None else {"keys": []})


@router.get("/fhir/{tenant}/.well-known/smart-configuration")
async def smart_configuration(request: Request, tenant: str) -> Response:
    auth = _auth(request)
    try:
        await auth.engine.tenant(tenant)
    except (TenantUnknownError, ValueError):
        return JSONResponse({"error": "not_found", "error_description": "unknown tenant"}, 404)
    base = auth.public_url
    scopes = sorted({scope for role in ROLES.values() for scope in role})
    body = {
        "issuer": base,
        "jwks_uri": f"{base}/.well-known/jwks.json",
        "token_endpoint": f"{base}/auth/token",
        "authorization_endpoint": f"{base}/auth/authorize",
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt",
                                                  "none"],
        "token_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGORITHMS,
        "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": [*scopes, "openid", "fhirUser", "launch", "launch/patient", "offline_access",
                             "online_access"],
        "capabilities": ["launch-ehr", "launch-standalone", "client-public", "client-confidential-symmetric",
                         "client-confidential-asymmetric", "context-ehr-patient", "sso-openid-connect",
                         "permission-offline", "permission-online", "permission-user", "permission-patient",
                         "permission-v1", "permission-v2"],
    }  # fmt: skip
    return JSONResponse(body)
