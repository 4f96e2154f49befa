"""Short-lived secrets handed to a browser or a client, kept as records of the tenant's store under the
SHA-256 of the secret (a copy of the database gives no usable session, code or refresh token).

A ticket's secret is ``<tenant>.<random>``: the tenant, whose database holds the record, travels with it.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

import orjson

from fhir_server.storage.port import Engine, Record, TenantStore, TenantUnknownError
from fhir_server.storage.query import FieldMatch, RecordQuery

log = logging.getLogger(__name__)
MAX_TICKET = 200  # characters of a presented secret looked at
MAX_GRANT_TICKETS = 1000  # tickets of a grant ended per transaction (a rotated chain keeps one live, the used stay)
MAX_GRANT_ROUNDS = 10_000  # transactions of one grant's end: ten million tickets, far more than a lifetime's rotations
SWEEP = 100  # expired tickets deleted each time one is issued: the collection stays bounded by the live ones


def _sortable(instant: float) -> str:
    """An instant as a string that sorts like the number (record fields compare as text)."""
    return f"{int(instant):012d}"


def ticket_key(secret: str) -> str:
    """The record key of a ticket: its secret's SHA-256."""
    return hashlib.sha256(secret.encode()).hexdigest()


class Tickets:
    """One collection of tickets (sessions, codes, launch contexts, refresh tokens)."""

    def __init__(self, engine: Engine, collection: str, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.collection = collection
        self.now = clock

    async def issue(self, tenant: str, body: dict[str, Any], lifetime: float) -> str:
        """A new secret whose record holds ``body`` until ``lifetime`` seconds from now."""
        secret = f"{tenant}.{secrets.token_urlsafe(32)}"
        await self.sweep(tenant)
        await self.put(tenant, secret, {**body, "expires": self.now() + lifetime, "created": self.now()})
        return secret

    async def put(self, tenant: str, secret: str, body: dict[str, Any]) -> None:
        store = await self.engine.tenant(tenant)
        fields: dict[str, tuple[str, ...]] = {"expires": (_sortable(float(body["expires"])),)}
        if body.get("grant"):
            fields["grant"] = (str(body["grant"]),)
        async with store.transaction() as tx:
            await tx.put_record(Record(self.collection, ticket_key(secret), orjson.dumps(body), fields))

    async def sweep(self, tenant: str) -> int:
        """Delete up to ``SWEEP`` expired tickets of the tenant; how many were."""
        store = await self.engine.tenant(tenant)
        query = RecordQuery(self.collection, (FieldMatch("expires", "range", ("", _sortable(self.now()))),), SWEEP)
        expired = await store.find_records(query)
        if expired:
            async with store.transaction() as tx:
                for record in expired:
                    await tx.delete_record(self.collection, record.key)
        return len(expired)

    async def _located(self, secret: str) -> tuple[TenantStore, str] | None:
        tenant, dot, rest = secret[:MAX_TICKET].rpartition(".")
        if not dot or not tenant or not rest:
            return None
        try:
            return await self.engine.tenant(tenant), ticket_key(secret)
        except (TenantUnknownError, ValueError):
            return None

    async def read(self, secret: str) -> tuple[str, dict[str, Any]] | None:
        """The tenant and body of a live ticket, or None (unknown, expired)."""
        located = await self._located(secret)
        if located is None:
            return None
        store, key = located
        record = await store.get_record(self.collection, key)
        if record is None:
            return None
        body: dict[str, Any] = orjson.loads(record.body)
        if body.get("expires", 0) <= self.now():
            return None
        return store.name, body

    async def take(self, secret: str, client_id: str | None = None) -> tuple[str, dict[str, Any]] | None:
        """Read a ticket and mark it used, in one transaction: the second taker gets the body with ``used``
        true (so that a reused code can revoke what its first use gave, RFC 6749 §4.1.2). With ``client_id``,
        another client's ticket is None and stays as it was: a stolen code or refresh token presented by the
        wrong client does not spend its owner's."""
        located = await self._located(secret)
        if located is None:
            return None
        store, key = located
        async with store.transaction() as tx:
            record = await tx.get_record(self.collection, key)
            if record is None:
                return None
            body: dict[str, Any] = orjson.loads(record.body)
            if client_id is not None and body.get("client_id") != client_id:
                return None
            if not body.get("used"):
                await tx.put_record(Record(self.collection, key, orjson.dumps({**body, "used": True}), record.fields))
        if body.get("expires", 0) <= self.now():
            return None
        return store.name, body

    async def end(self, secret: str) -> None:
        located = await self._located(secret)
        if located is not None:
            await self.end_key(located[0].name, located[1])

    async def end_grant(self, tenant: str, grant: str) -> None:
        """End every ticket of one grant (a chain of rotated refresh tokens, RFC 9700 §4.14.2): batch after batch
        until none is left, so that no chain is too long to end (the live ticket may sort after any number of used
        ones)."""
        store = await self.engine.tenant(tenant)
        query = RecordQuery(self.collection, (FieldMatch("grant", "eq", (grant,)),), MAX_GRANT_TICKETS)
        for _ in range(MAX_GRANT_ROUNDS):
            async with store.transaction() as tx:
                found = await tx.find_records(query)
                for record in found:
                    await tx.delete_record(self.collection, record.key)
            if not found:
                return
        log.error("grant %s of tenant %s has more than %d tickets; the rest stay until they expire", grant, tenant,
                  MAX_GRANT_ROUNDS * MAX_GRANT_TICKETS)  # fmt: skip

    async def end_key(self, tenant: str, key: str) -> None:
        store = await self.engine.tenant(tenant)
        async with store.transaction() as tx:
            await tx.delete_record(self.collection, key)
