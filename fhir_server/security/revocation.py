"""Revocation of access tokens by the state of their client (RFC 7009 §2.2 in effect: a disabled
client's tokens stop working, not only its future token requests).

Every request with a token this server issued checks that the issuing client is still active and
that the token was issued after the client's ``tokens_not_before``. The client's state is read from
its tenant's store and kept for ``ttl`` seconds, so a client disabled by another process (the
``dermbridge client disable`` command, another node) loses access within that time, without a
restart, at the cost of one record read per client and ``ttl``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from fhir_server.security.clients import Client, ClientRegistry

CLIENT_STATE_TTL = 2.0
MAX_CLIENTS = 10_000


class ClientStates:
    """Recently read client records, for the revocation check on each request."""

    def __init__(
        self, clients: ClientRegistry, ttl: float = CLIENT_STATE_TTL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.clients, self.ttl, self.clock = clients, ttl, clock
        self._known: dict[str, tuple[Client | None, float]] = {}

    async def revoked(self, client_id: str, issued_at: int) -> bool:
        """Whether a token issued to ``client_id`` at ``issued_at`` no longer holds (the client is
        disabled, gone, or revoked its tokens since)."""
        client = await self._client(client_id)
        return client is None or client.revokes(issued_at)

    async def _client(self, client_id: str) -> Client | None:
        now = self.clock()
        known = self._known.get(client_id)
        if known is not None and known[1] > now:
            return known[0]
        client = await self.clients.get(client_id)
        if len(self._known) >= MAX_CLIENTS:
            self._known = {k: v for k, v in self._known.items() if v[1] > now}
            if len(self._known) >= MAX_CLIENTS:
                self._known.clear()
        self._known[client_id] = (client, now + self.ttl)
        return client
