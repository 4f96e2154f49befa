"""The OAuth2 token endpoint (RFC 6749 §4.4 client credentials), HTTP-free.

Clients authenticate with their secret (``client_secret_basic`` or ``client_secret_post``) or, as
SMART Backend Services ask, with a signed JWT assertion (``private_key_jwt``, RFC 7523) checked
against the JWKS registered with the client. A client assertion is single use (its ``jti`` is
remembered until it expires). Repeated failures lock the (client id, caller address) pair out
(:mod:`fhir_server.security.lockout`); a client assertion is always checked, since a valid
signature cannot be guessed. Refusals carry RFC 6749 error codes.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import jwt

from fhir_server.security.assertion_ids import MAX_JTI, AssertionIds
from fhir_server.security.clients import Client, ClientRegistry, verify_secret
from fhir_server.security.lockout import Lockout
from fhir_server.security.scopes import Scope, grant, role_scopes
from fhir_server.security.tokens import LEEWAY_SECONDS, TokenService

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGORITHMS = ["RS384", "ES384", "RS256", "ES256", "PS384", "EdDSA"]
MAX_ASSERTION_LIFETIME = 300


class OAuthError(Exception):
    def __init__(
        self, status: int, error: str, description: str, client_id: str | None = None, retry_after: int | None = None
    ) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description
        self.client_id = client_id
        self.retry_after = retry_after

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


@dataclass(frozen=True, slots=True)
class TokenRequest:
    form: dict[str, str]
    authorization: str | None  # the Authorization header, for client_secret_basic
    address: str  # the caller's address, for the lockout
    endpoint_urls: tuple[str, ...]  # what a client assertion's aud may name


@dataclass(frozen=True, slots=True)
class Issued:
    client: Client
    scopes: list[Scope]
    body: dict[str, Any]


class TokenEndpoint:
    def __init__(self, clients: ClientRegistry, tokens: TokenService, lockout: Lockout | None = None) -> None:
        self.clients = clients
        self.tokens = tokens
        self.lockout = lockout or Lockout()
        self.replays = AssertionIds(clients.engine)  # in the database: every API process sees every use
        self.grants: dict[str, Callable[[TokenRequest], Awaitable[Issued]]] = {}  # other grant types, by name

    async def handle(self, request: TokenRequest) -> Issued:
        form = request.form
        other = self.grants.get(form.get("grant_type", ""))
        if other is not None:
            return await other(request)
        if form.get("grant_type") != "client_credentials":
            supported = ", ".join(["client_credentials", *self.grants])
            raise OAuthError(400, "unsupported_grant_type", f"this server issues tokens for {supported} only")
        client = await self.authenticate(request)
        claimed = client.client_id
        scopes = grant(form.get("scope"), role_scopes(client.roles))
        if not scopes:
            raise OAuthError(400, "invalid_scope", "none of the requested scopes is allowed to this client", claimed)
        token, lifetime = self.tokens.mint(
            tenant=client.tenant,
            client_id=client.client_id,
            scopes=scopes,
            roles=client.roles,
            fhir_user=client.extra.get("fhirUser"),
        )
        body = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": lifetime,
            "scope": " ".join(str(s) for s in scopes),
        }
        return Issued(client, scopes, body)

    async def authenticate(self, request: TokenRequest) -> Client:
        """The client that authenticates this request (secret or assertion), under the lockout."""
        form = request.form
        _check_one_method(request)
        claimed = self._claimed_client_id(request)
        asserted = bool(form.get("client_assertion"))  # a signed assertion cannot be guessed: never refused first
        wait = None if asserted else await self.lockout.retry_after(claimed, request.address)
        if wait is not None:
            raise OAuthError(429, "invalid_client", "too many failed attempts: try later", claimed, wait)
        try:
            client = await self._authenticate(request, claimed)
        except OAuthError as error:
            if error.error == "invalid_client":
                await self._failed(claimed, request.address, asserted)
            raise
        await self.lockout.succeed(claimed, request.address)
        return client

    async def _failed(self, claimed: str, address: str, asserted: bool) -> None:
        """Count a failed authentication. A failed assertion names its client only in its unverified ``iss``: it
        strikes the (client, address) pair only for a registered client, and from an address locked out already
        it is refused (429) without writing anything (pentest-5 F12: no unbounded writes by strangers)."""
        if asserted:
            wait = await self.lockout.retry_after("", address)
            if wait is not None:
                raise OAuthError(429, "invalid_client", "too many failed attempts: try later", claimed, wait)
            if await self.clients.get(claimed) is None:
                claimed = ""
        await self.lockout.fail(claimed, address)

    @staticmethod
    def _claimed_client_id(request: TokenRequest) -> str:
        form = request.form
        if form.get("client_assertion"):
            try:
                claims = jwt.decode(form["client_assertion"], options={"verify_signature": False})
            except jwt.PyJWTError as exc:
                raise OAuthError(400, "invalid_client", "the client assertion is not a well-formed JWT") from exc
            return str(claims.get("iss") or form.get("client_id") or "")
        basic = _basic_credentials(request.authorization)
        if basic is not None:
            if form.get("client_id") not in (None, basic[0]):
                raise OAuthError(400, "invalid_request", "client_id differs from the Basic credentials", basic[0])
            return basic[0]
        return form.get("client_id", "")

    async def _authenticate(self, request: TokenRequest, client_id: str) -> Client:
        if not client_id:
            raise OAuthError(401, "invalid_client", "the client is not identified")
        client = await self.clients.get(client_id)
        form = request.form
        if form.get("client_assertion"):
            if client is None or not client.active:
                raise OAuthError(401, "invalid_client", "client authentication failed", client_id)
            await self._check_assertion(client, request)
            return client
        basic = _basic_credentials(request.authorization)
        secret = basic[1] if basic is not None else form.get("client_secret")
        # the same scrypt work for unknown, disabled and secret-less clients: time tells nothing
        if not await verify_secret(client, secret or "") or client is None:
            raise OAuthError(401, "invalid_client", "client authentication failed", client_id)
        return client

    async def _check_assertion(self, client: Client, request: TokenRequest) -> None:
        form = request.form

        def refuse(description: str) -> OAuthError:
            return OAuthError(401, "invalid_client", description, client.client_id)

        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise OAuthError(400, "invalid_client", f"client_assertion_type must be {ASSERTION_TYPE}", client.client_id)
        if form.get("client_id") not in (None, client.client_id):
            raise refuse("client_id does not match the assertion")
        if not client.jwks:
            raise refuse("this client has no registered keys")
        assertion = form["client_assertion"]
        try:
            key = _assertion_key(client.jwks, jwt.get_unverified_header(assertion).get("kid"))
            claims = jwt.decode(
                assertion,
                key,
                algorithms=ASSERTION_ALGORITHMS,
                audience=list(request.endpoint_urls),
                issuer=client.client_id,
                options={"require": ["exp", "jti", "sub", "iss", "aud"]},
                leeway=LEEWAY_SECONDS,
            )
        except jwt.ExpiredSignatureError as exc:
            raise refuse("the client assertion has expired") from exc
        except (jwt.PyJWTError, ValueError) as exc:
            raise refuse(f"the client assertion is not valid: {exc}") from exc
        if claims["sub"] != client.client_id:
            raise refuse("the assertion's sub must be the client id")
        if claims["exp"] > time.time() + MAX_ASSERTION_LIFETIME + LEEWAY_SECONDS:
            raise refuse("the client assertion lives longer than 5 minutes")
        if len(str(claims["jti"])) > MAX_JTI:
            raise refuse(f"the client assertion's jti is longer than {MAX_JTI} characters")
        if not await self.replays.first_use(client.tenant, client.client_id, str(claims["jti"]), float(claims["exp"])):
            raise refuse("the client assertion was already used (jti)")


def _check_one_method(request: TokenRequest) -> None:
    """RFC 6749 §2.3: "The client MUST NOT use more than one authentication method in each request":
    Basic credentials (§2.3.1), a ``client_secret`` in the body (§2.3.1) and a client assertion
    (RFC 7523 §2.2) exclude each other. A ``client_id`` in the body is no method: it may accompany
    any of them (RFC 7521 §4.2), but must then name the same client."""
    form = request.form
    used = [
        name
        for name, present in (
            ("client_secret_basic", (request.authorization or "").lower().startswith("basic ")),
            ("client_secret_post", "client_secret" in form),
            ("private_key_jwt", "client_assertion" in form),
        )
        if present
    ]
    if len(used) > 1:
        raise OAuthError(
            400, "invalid_request", f"one client authentication method per request, not {' and '.join(used)}"
        )


def _assertion_key(jwks: dict[str, Any], kid: str | None) -> Any:
    keys = jwt.PyJWKSet.from_dict(jwks).keys
    for key in keys:
        if kid is None or key.key_id == kid:
            return key.key
    raise ValueError("no registered key matches the assertion's kid")


def _basic_credentials(header: str | None) -> tuple[str, str] | None:
    """RFC 6749 §2.3.1: Basic with the form-urlencoded id and secret."""
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    client_id, colon, secret = decoded.partition(":")
    return (unquote(client_id), unquote(secret)) if colon else None
