"""Signing people in through the hospital's OpenID provider in the browser: this server is an
authorization-code client of the provider (OpenID Connect Core 1.0 §3.1, with PKCE, RFC 7636).

The provider is found by discovery (OpenID Connect Discovery 1.0 §4, ``/.well-known/openid-configuration``).
``state`` names a one-use ticket holding the tenant, the page to go back to, the PKCE verifier and the
``nonce``; the ID token is checked (§3.1.3.7: signature from the provider's JWKS, ``iss``, ``aud`` = our
client id, ``exp``, ``nonce``) and its ``sub`` must be a user of the tenant's directory registered with
that subject (``dermbridge user create --oidc-subject``): the provider says who the person is, the
directory which Practitioner and roles they have here.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt

from fhir_server.people.tickets import Tickets
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
    def __init__(self, issuer: str, client_id: str, client_secret: str | None, callback: str, tickets: Tickets) -> None:
        self.issuer = issuer.rstrip("/")
        self.client_id = client_id
        self.client_secret = client_secret
        self.callback = callback
        self.tickets = tickets
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

    async def start(self, tenant: str, next_url: str) -> str:
        """The provider's authorization URL to send the browser to."""
        metadata = await self.metadata()
        verifier, nonce = secrets.token_urlsafe(48), secrets.token_urlsafe(24)
        state = await self.tickets.issue(
            tenant, {"next": next_url, "verifier": verifier, "nonce": nonce}, STATE_SECONDS
        )
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
        return f"{metadata['authorization_endpoint']}?{urlencode(query)}"

    async def finish(self, code: str, state: str) -> ProviderIdentity:
        """Exchange the provider's code; who signed in there, for which tenant and page."""
        taken = await self.tickets.take(state)
        if taken is None or taken[1].get("used"):
            raise ProviderLoginError("the sign-in state is unknown, expired or already used")
        tenant, pending = taken
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
