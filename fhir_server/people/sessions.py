"""Browser sessions of signed-in people: server-side records in the tenant database (OWASP ASVS V3), an
absolute lifetime, and a CSRF token per session for the forms a signed-in person posts (ASVS V4.2.2).
A session ends at sign-out, at expiry, and when its user is disabled or gets a new password."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from fhir_server.people.tickets import Tickets
from fhir_server.people.users import User, UserDirectory
from fhir_server.storage.port import Engine

COLLECTION = "auth.session"
COOKIE = "dermbridge_session"


@dataclass(frozen=True, slots=True)
class Session:
    secret: str  # the cookie value
    tenant: str
    user: User
    csrf: str
    expires: float


class Sessions:
    def __init__(
        self, engine: Engine, users: UserDirectory, lifetime: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.tickets = Tickets(engine, COLLECTION, clock)
        self.users = users
        self.lifetime = lifetime

    async def open(self, tenant: str, user: User) -> str:
        """A new session of ``user``: the secret for the cookie."""
        body = {"username": user.username, "csrf": secrets.token_urlsafe(32)}
        return await self.tickets.issue(tenant, body, self.lifetime)

    async def current(self, secret: str | None) -> Session | None:
        """The live session the cookie names, or None (none, expired, ended, user disabled or reset)."""
        found = await self.tickets.read(secret) if secret else None
        if found is None or secret is None:
            return None
        tenant, body = found
        user = await self.users.get(tenant, str(body.get("username", "")))
        if user is None or not user.active or float(body["created"]) < user.sessions_not_before:
            return None
        return Session(secret, tenant, user, str(body["csrf"]), float(body["expires"]))

    async def close(self, secret: str) -> None:
        await self.tickets.end(secret)
