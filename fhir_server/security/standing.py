"""Standing credentials: HTTP Basic with a client's id and secret (RFC 7617), and API keys
(:mod:`fhir_server.security.api_keys`), for systems that cannot refresh OAuth tokens.

Both end as the same :class:`Access` a token gives, so the ``AccessPolicy`` decides as for any token.
A client sends Basic only when an operator allowed it (``dermbridge client allow-basic``); it then has
the scopes of its roles. An API key has its own scopes and, for ``patient/`` scopes, its patient; it
is sent as ``Authorization: Bearer dbk_...`` or as the password of Basic with the client id as user.
The client and key records are read on every request: disabling a client, forbidding Basic or
revoking a key holds at once. Secrets are checked with the scrypt of client secrets, remembered only
once they matched (so a busy PACS does not pay tens of ms per request); failures count in the token
endpoint's lockout (RFC 6749 §10.10), per (credential, address) pair and per address.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Coroutine
from typing import Any
from urllib.parse import unquote

from fhir_server.errors import OperationOutcomeError, not_found, outcome, unauthorized
from fhir_server.security.api_keys import ApiKeys, split_key
from fhir_server.security.clients import ClientRegistry, secret_matches
from fhir_server.security.lockout import Lockout
from fhir_server.security.scopes import Access, parse_scopes, role_scopes
from fhir_server.storage.port import TenantUnknownError

MAX_REMEMBERED = 10_000
_REFUSED = "the credentials were not accepted"


def throttled(wait: int) -> OperationOutcomeError:
    """429 after too many failed attempts (RFC 6585 §4), with when to try again."""
    body = outcome("error", "throttled", "too many failed authentication attempts: try later")
    return OperationOutcomeError(429, body, {"Retry-After": str(wait)})


class StandingCredentials:
    """Turns Basic credentials or an API key into the caller's :class:`Access` on a tenant."""

    def __init__(self, clients: ClientRegistry, keys: ApiKeys, lockout: Lockout) -> None:
        self.clients, self.keys, self.lockout = clients, keys, lockout
        self._matched: set[tuple[str, str]] = set()  # (stored hash, digest of the presented secret)

    async def basic(self, encoded: str, tenant: str, address: str) -> Access:
        """RFC 7617 credentials: a client id with its secret, or with one of its API keys."""
        try:
            user, colon, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            raise unauthorized("the Basic credentials are not base64 of id:secret", "") from None
        if not colon or not user:
            raise unauthorized("the Basic credentials are not base64 of id:secret", "")
        user, password = unquote(user), unquote(password)
        if split_key(password) is not None:
            return await self.api_key(password, tenant, address, client_id=user)
        return await self._guarded(user, address, self._client_secret(user, password, tenant))

    async def api_key(self, text: str, tenant: str, address: str, client_id: str | None = None) -> Access:
        """An API key's Access: its own scopes and patient, while the key and its client are active."""
        parts = split_key(text)
        if parts is None:
            raise unauthorized("the API key is not well-formed")
        return await self._guarded(f"key:{parts[0]}", address, self._key(parts, tenant, client_id))

    async def _guarded(self, who: str, address: str, check: Coroutine[Any, Any, Access]) -> Access:
        wait = await self.lockout.retry_after(who, address)
        if wait is not None:
            check.close()  # a locked-out attempt is not even tried
            raise throttled(wait)
        try:
            access = await check
        except OperationOutcomeError as error:
            if error.status == 401:
                await self.lockout.fail(who, address)
            raise
        await self.lockout.succeed(who, address)
        return access

    async def _client_secret(self, client_id: str, secret: str, tenant: str) -> Access:
        client = await self.clients.get(client_id)
        # the same scrypt work whether or not the client exists, is active, or may use Basic
        if not await self._verified(client.secret_hash if client else None, secret) or client is None:
            raise unauthorized(_REFUSED)
        if not client.active:
            raise unauthorized(f"{client_id} is disabled")
        if not client.basic_auth:
            raise unauthorized(
                f"{client_id} may not use HTTP Basic (dermbridge client allow-basic), or ask for a token"
            )
        if client.tenant != tenant:
            raise not_found(f"unknown tenant {tenant!r}")
        return Access(tenant, client.client_id, tuple(role_scopes(client.roles)), roles=client.roles,
                      fhir_user=client.extra.get("fhirUser"))  # fmt: skip

    async def _key(self, parts: tuple[str, str], tenant: str, client_id: str | None) -> Access:
        key_id, secret = parts
        try:
            key = await self.keys.get(tenant, key_id)
        except (TenantUnknownError, ValueError):
            key = None
        if not await self._verified(key.secret_hash if key else None, secret) or key is None:
            raise unauthorized(_REFUSED)
        if not key.active:
            raise unauthorized("the API key was revoked")
        if client_id is not None and client_id != key.client_id:
            raise unauthorized(_REFUSED)
        client = await self.clients.get(key.client_id)
        if client is None or not client.active:
            raise unauthorized("the API key's client is disabled")
        return Access(tenant, client.client_id, tuple(parse_scopes(" ".join(key.scopes))), patient=key.patient,
                      roles=client.roles, fhir_user=client.extra.get("fhirUser"))  # fmt: skip

    async def _verified(self, secret_hash: str | None, secret: str) -> bool:
        """Whether ``secret`` matches ``secret_hash`` (scrypt, off the event loop, against a decoy
        when there is no hash; or remembered from an earlier match)."""
        digest = hashlib.sha256(secret.encode()).hexdigest()
        if secret_hash is not None and (secret_hash, digest) in self._matched:
            return True
        matched = await asyncio.to_thread(secret_matches, secret_hash, secret)
        if matched and secret_hash is not None:
            if len(self._matched) >= MAX_REMEMBERED:
                self._matched.clear()
            self._matched.add((secret_hash, digest))
        return matched
