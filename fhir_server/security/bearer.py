"""Bearer tokens on requests (RFC 6750): from the Authorization header to an :class:`Access`; and the
standing credentials of systems that cannot refresh tokens (HTTP Basic, API keys:
:mod:`fhir_server.security.standing`), which end as the same Access."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fhir_server.errors import not_found, unauthorized
from fhir_server.security.api_keys import split_key
from fhir_server.security.caller_note import note_access
from fhir_server.security.revocation import ClientStates
from fhir_server.security.scopes import Access
from fhir_server.security.standing import StandingCredentials
from fhir_server.security.tokens import TokenRejected, TokenService, Verified, WrongTenant

log = logging.getLogger(__name__)


def discovery_path(tenant: str) -> str:
    """The tenant's SMART configuration (SMART App Launch 2.x §2.1), where a client learns how to sign in."""
    return f"/fhir/{tenant}/.well-known/smart-configuration"


class Authenticator:
    """Checks bearer tokens, and that the client of a token issued here still holds it; with
    ``tokens=None`` (the explicit insecure development mode) every request is let through unrestricted."""

    def __init__(
        self,
        tokens: TokenService | None,
        clients: ClientStates | None = None,
        standing: StandingCredentials | None = None,
    ) -> None:
        self.tokens = tokens
        self.clients = clients
        self.standing = standing
        # (tenant, username, issued_at) -> whether a person's token no longer holds (fhir_server.people)
        self.user_revoked: Callable[[str, str, int], Awaitable[bool]] | None = None

    @property
    def enabled(self) -> bool:
        return self.tokens is not None

    async def access(self, authorization: str | None, tenant: str, address: str = "") -> Access | None:
        """The caller's Access on ``tenant``: 401 without a usable token, 404 for another tenant's.
        ``address`` (the caller's) bounds the attempts of standing credentials. Its client id is noted
        for the request's log line (``caller_note``)."""
        return note_access(await self._access(authorization, tenant, address))

    async def _access(self, authorization: str | None, tenant: str, address: str) -> Access | None:
        if self.tokens is None:
            return None
        scheme, _, token = (authorization or "").partition(" ")
        if self.standing is not None:
            if scheme.lower() == "basic":
                return await self.standing.basic(token.strip(), tenant, address)
            if scheme.lower() == "bearer" and split_key(token.strip()) is not None:
                return await self.standing.api_key(token.strip(), tenant, address)
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorized(f"this endpoint needs a bearer access token (see {discovery_path(tenant)})", "")
        try:
            verified = self.tokens.verified(token.strip(), tenant)
        except TokenRejected as exc:
            raise unauthorized(str(exc)) from exc
        except WrongTenant as exc:
            raise not_found(f"unknown tenant {tenant!r}") from exc
        if await self._revoked(verified):
            raise unauthorized("the access token was revoked: its client or user is disabled or revoked its tokens")
        return verified.access

    def expires(self, authorization: str | None, tenant: str) -> float | None:
        """When the bearer token of an accepted request expires; None for standing credentials (Basic, API
        keys: they hold until revoked) and with authentication off."""
        scheme, _, token = (authorization or "").partition(" ")
        if self.tokens is None or scheme.lower() != "bearer" or split_key(token.strip()) is not None:
            return None
        return self.tokens.verified(token.strip(), tenant).expires

    async def _revoked(self, verified: Verified) -> bool:
        if verified.client_id is None or self.clients is None:
            return False  # an external provider's token: that provider revokes its own
        user, check = verified.user, self.user_revoked
        if user is not None and check is not None and await check(verified.access.tenant, user, verified.issued_at):
            return True
        return await self.clients.revoked(verified.client_id, verified.issued_at)
