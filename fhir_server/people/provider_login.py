"""Signing people in through the hospital's OpenID provider in the browser: this server is an
authorization-code client of the provider (OpenID Connect Core 1.0 §3.1, with PKCE, RFC 7636).

The provider is found by discovery (OpenID Connect Discovery 1.0 §4, ``/.well-known/openid-configuration``).
The pending sign-in (the tenant, the page to go back to, the PKCE verifier, the ``nonce`` and ``state``) is kept
in a short-lived cookie signed with the server's key (HMAC-SHA256), not in the database: a stranger who starts
sign-ins at request rate fills no store (pentest-4 F5), and every API process can check it. The ID token is
checked (§3.1.3.7: signature from the provider's JWKS, ``iss``, ``aud`` = our client id, ``exp``, ``nonce``)
and its ``sub`` must be a user of the tenant's directory registered with that subject (``dermbridge user create
--oidc-subject``): the provider says who the person is, the directory which Practitioner and roles they have here.

The state is bound to the browser that started the sign-in (OpenID Connect Core §3.1.2.1, RFC 9700
§4.7.1): the callback is refused unless the browser brings back the signed cookie naming that ``state``
(HttpOnly, SameSite=Lax; no login CSRF: a callback URL opened by another browser signs nobody in). The
cookie is deleted at the callback, and the provider's code is single-use.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt

from fhir_server.security.tokens import EXTERNAL_ALGORITHMS, LEEWAY_SECONDS

STATE_SECONDS = 600
TIMEOUT = 10.0


class ProviderLoginError(Exception):
    """The provider's answer cannot sign anyone in; the message is for the audit trail and the page."""


@dataclass(frozen=True, slots=True)
class ProviderIdentity:
    tenant: str
    subject: str
    next_url: str


class ProviderLogin:
    def __init__(self, issuer: str, client_id: str, client_secret: str | None, callback: str, key: bytes) -> None:
        self.issuer = issuer.rstrip("/")
        self.client_id = client_id
        self.client_secret = client_secret
        self.callback = callback
        self.key = key  # signs the pending sign-in cookie
        self._metadata: dict[str, Any] | None = None
        self._jwks: jwt.PyJWKClient | None = None

    async def metadata(self) -> dict[str, Any]:
        if self._metadata is None:
            try:
                async with httpx.AsyncClient(timeout=TIMEOUT) as http:
                    answer = await http.get(f"{self.issuer}/.well-known/openid-configuration")
                    answer.raise_for_status()
                    found: dict[str, Any] = answer.json()
            except (httpx.HTTPError, ValueError) as exc:
                raise ProviderLoginError(f"the OpenID provider's discovery document cannot be read: {exc}") from exc
            if found.get("issuer", "").rstrip("/") != self.issuer:
                raise ProviderLoginError("the provider's discovery document names another issuer")
            self._metadata = found
        return self._metadata

    async def start(self, tenant: str, next_url: str) -> tuple[str, str]:
        """The provider's authorization URL to send the browser to, and the pending sign-in's cookie value."""
        metadata = await self.metadata()
        verifier, nonce, state = secrets.token_urlsafe(48), secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        pending = {"tenant": tenant, "next": next_url, "verifier": verifier, "nonce": nonce, "state": state}
        cookie = self._seal({**pending, "expires": int(time.time()) + STATE_SECONDS})
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        query = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.callback,
            "scope": "openid",
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        return f"{metadata['authorization_endpoint']}?{urlencode(query)}", cookie

    def _seal(self, pending: dict[str, Any]) -> str:
        body = base64.urlsafe_b64encode(json.dumps(pending, separators=(",", ":")).encode()).decode().rstrip("=")
        return f"{body}.{hmac.new(self.key, body.encode(), hashlib.sha256).hexdigest()}"

    def _open(self, cookie: str | None, state: str) -> dict[str, Any]:
        """The pending sign-in of the cookie, if it is ours, unexpired and for ``state``."""
        body, _, mac = (cookie or "").partition(".")
        if not body or not hmac.compare_digest(mac, hmac.new(self.key, body.encode(), hashlib.sha256).hexdigest()):
            raise ProviderLoginError("the sign-in was started in another browser (state not bound to this one)")
        pending: dict[str, Any] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        if int(pending["expires"]) < time.time() or not hmac.compare_digest(str(pending["state"]), state):
            raise ProviderLoginError("the sign-in state is unknown, expired or not this browser's")
        return pending

    async def finish(self, code: str, state: str, cookie: str | None) -> ProviderIdentity:
        """Exchange the provider's code; who signed in there, for which tenant and page. ``cookie``: the
        pending sign-in cookie the callback came with (None: none)."""
        pending = self._open(cookie, state)
        tenant = str(pending["tenant"])
        metadata = await self.metadata()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.callback,
            "client_id": self.client_id,
            "code_verifier": pending["verifier"],
        }
        if self.client_secret:
            form["client_secret"] = self.client_secret
        try:
            async with httpx.AsyncClient(timeout=TIMEOUT) as http:
                answer = await http.post(metadata["token_endpoint"], data=form)
            body = answer.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise ProviderLoginError(f"the provider's token endpoint did not answer: {exc}") from exc
        if answer.status_code != 200 or not isinstance(body, dict) or "id_token" not in body:
            raise ProviderLoginError(f"the provider refused the code: HTTP {answer.status_code}")
        claims = await asyncio.to_thread(self._verify, str(body["id_token"]), str(metadata["jwks_uri"]))
        if claims.get("nonce") != pending["nonce"]:
            raise ProviderLoginError("the ID token's nonce is not the one sent")
        return ProviderIdentity(tenant, str(claims["sub"]), str(pending["next"]))

    def _verify(self, id_token: str, jwks_uri: str) -> dict[str, Any]:
        if self._jwks is None:
            self._jwks = jwt.PyJWKClient(jwks_uri, cache_keys=True, lifespan=300, timeout=int(TIMEOUT))
        try:
            key = self._jwks.get_signing_key_from_jwt(id_token).key
            claims: dict[str, Any] = jwt.decode(
                id_token,
                key,
                algorithms=EXTERNAL_ALGORITHMS,
                issuer=self.issuer,
                audience=self.client_id,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
        except (jwt.PyJWTError, OSError, ValueError) as exc:
            raise ProviderLoginError(f"the provider's ID token is not valid: {exc}") from exc
        return claims
