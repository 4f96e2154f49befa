"""The token endpoint's grants for people: ``authorization_code`` (RFC 6749 §4.1.3 with PKCE, RFC 7636
§4.6) and ``refresh_token`` (RFC 6749 §6, rotated: each refresh token is used once, RFC 9700 §4.14.2).

A public app identifies itself by ``client_id`` alone and proves the code with its PKCE verifier; a
confidential one authenticates as at the client-credentials grant (and under the same lockout). A code
lives one minute and is used once: presenting it again is refused and ends the refresh tokens its first
use gave (RFC 6749 §4.1.2); so does a used refresh token presented again (the whole grant ends, RFC 9700
§4.14.2). A code or refresh token presented by another client is refused and left to its owner. The token
response carries ``patient`` for a launch context with a patient, and, for ``openid``, an ``id_token`` signed
RS256 with the server's RSA key (the algorithm SMART servers must support) naming the user as ``fhirUser``
(SMART App Launch 2.x, scopes-and-launch-context.html#scopes-for-requesting-identity-data).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from typing import Any

from fhir_server.people.tickets import Tickets
from fhir_server.people.user_grant import Granted, person_grant
from fhir_server.people.users import User, UserDirectory
from fhir_server.security.clients import Client, ClientRegistry
from fhir_server.security.endpoint import Issued, OAuthError, TokenEndpoint, TokenRequest
from fhir_server.security.scopes import parse_scopes

VERIFIER = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")  # RFC 7636 §4.1


class CodeExchange:
    def __init__(
        self, endpoint: TokenEndpoint, users: UserDirectory, codes: Tickets, refreshes: Tickets, refresh_seconds: int
    ) -> None:
        self.endpoint = endpoint
        self.clients: ClientRegistry = endpoint.clients
        self.users = users
        self.codes = codes
        self.refreshes = refreshes
        self.refresh_seconds = refresh_seconds

    def register(self) -> None:
        self.endpoint.grants["authorization_code"] = self.authorization_code
        self.endpoint.grants["refresh_token"] = self.refresh_token

    async def _client(self, request: TokenRequest) -> Client:
        form = request.form
        presents = (request.authorization or "").lower().startswith("basic ") or any(
            k in form for k in ("client_secret", "client_assertion")
        )
        if presents:
            return await self.endpoint.authenticate(request)
        client = await self.clients.get(form.get("client_id", ""))
        if client is None or not client.active or not client.public:
            raise OAuthError(401, "invalid_client", "client authentication failed", form.get("client_id"))
        return client

    async def authorization_code(self, request: TokenRequest) -> Issued:
        form = request.form
        client = await self._client(request)
        taken = await self.codes.take(form.get("code", ""), client.client_id)
        if taken is None:
            raise _invalid_grant("the authorization code is unknown, expired or another client's", client)
        tenant, code = taken
        if code.get("used"):
            if code.get("grant"):
                await self.refreshes.end_grant(tenant, str(code["grant"]))
            raise _invalid_grant("the authorization code was already used", client)
        if code["redirect_uri"] != form.get("redirect_uri"):
            raise _invalid_grant("the code was issued for another redirect_uri", client)
        if not _pkce_ok(form.get("code_verifier", ""), str(code["challenge"])):
            raise _invalid_grant("the code_verifier does not match the code_challenge (PKCE)", client)
        user = await self._user(tenant, str(code["username"]), 0.0, client)
        granted = person_grant(str(code["scope"]), user.roles, client.roles, code.get("patient"))
        chain = secrets.token_hex(16)  # the grant every refresh token rotated from this code belongs to
        issued = await self._issue(client, user, granted, code.get("patient"), code.get("nonce"), chain)
        if "refresh_token" in issued.body:
            await self.codes.put(tenant, form["code"], {**code, "used": True, "grant": chain})
        return issued

    async def refresh_token(self, request: TokenRequest) -> Issued:
        """A used refresh token presented again means one of its holders stole it: the whole grant ends, the
        token it was rotated into too (RFC 9700 §4.14.2)."""
        client = await self._client(request)
        taken = await self.refreshes.take(request.form.get("refresh_token", ""), client.client_id)
        if taken is not None and taken[1].get("used") and taken[1].get("grant"):
            await self.refreshes.end_grant(taken[0], str(taken[1]["grant"]))
        if taken is None or taken[1].get("used"):
            raise _invalid_grant("the refresh token is unknown, expired, already used or another client's", client)
        tenant, grant = taken
        user = await self._user(tenant, str(grant["username"]), float(grant["created"]), client)
        granted = person_grant(str(grant["scope"]), user.roles, client.roles, grant.get("patient"))
        chain = str(grant.get("grant") or secrets.token_hex(16))
        return await self._issue(client, user, granted, grant.get("patient"), None, chain)

    async def _user(self, tenant: str, username: str, created: float, client: Client) -> User:
        user = await self.users.get(tenant, username)
        if user is None or not user.active or created < user.sessions_not_before:
            raise _invalid_grant("the user is disabled or signed in again since", client)
        return user

    async def _issue(
        self, client: Client, user: User, granted: Granted, patient: str | None, nonce: str | None, chain: str
    ) -> Issued:
        tokens = self.endpoint.tokens
        token, lifetime = tokens.mint(
            tenant=client.tenant,
            client_id=client.client_id,
            scopes=granted.resources,
            roles=user.roles,
            fhir_user=user.fhir_user,
            user=user.username,
            patient=patient,
        )
        body: dict[str, Any] = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": lifetime,
            "scope": granted.text,
        }
        if patient:
            body["patient"] = patient
        if granted.openid:
            body["id_token"] = self._id_token(client, user, nonce)
        if granted.refresh:
            grant = {
                "client_id": client.client_id,
                "username": user.username,
                "scope": granted.text,
                "patient": patient,
                "grant": chain,
            }
            body["refresh_token"] = await self.refreshes.issue(client.tenant, grant, self.refresh_seconds)
        return Issued(client, parse_scopes(granted.text), body)

    def _id_token(self, client: Client, user: User, nonce: str | None) -> str:
        """OpenID Connect Core §2 ID token, RS256; ``fhirUser`` an absolute URL (SMART 2.x)."""
        tokens = self.endpoint.tokens
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": tokens.issuer,
            "sub": f"{client.tenant}/{user.username}",
            "aud": client.client_id,
            "iat": now,
            "exp": now + tokens.lifetime,
            "fhirUser": f"{tokens.audience(client.tenant)}/{user.fhir_user}",
        }
        if nonce:
            claims["nonce"] = nonce
        return tokens.signer.sign_id_token(claims)


def _pkce_ok(verifier: str, challenge: str) -> bool:
    """RFC 7636 §4.6: BASE64URL(SHA256(code_verifier)) == code_challenge."""
    if not VERIFIER.match(verifier):
        return False
    digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return hmac.compare_digest(digest, challenge)


def _invalid_grant(description: str, client: Client) -> OAuthError:
    return OAuthError(400, "invalid_grant", description, client.client_id)
