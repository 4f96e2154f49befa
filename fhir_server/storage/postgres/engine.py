"""The PostgreSQL engine: one schema per tenant, a connection pool per tenant, LISTEN/NOTIFY wake-ups.

Each tenant's pool opens its connections with ``search_path`` set to the tenant's schema (a startup
parameter, so it survives the pool's reset between uses) and ``synchronous_commit = on``: a commit
returns once its WAL is flushed. Statements name tables unqualified; the pool decides the tenant.
The engine keeps one more connection, LISTENing on the outbox channel: a commit that appended events
in any process wakes this process's commit listeners (no polling).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import asyncpg

from fhir_server.storage.port import (
    AuditCheckpoint,
    AuditEntry,
    AuditIndexer,
    AuditLink,
    AuditStaging,
    HistoryPage,
    HistoryQuery,
    IndexEntries,
    MigratingEngine,
    OutboxEvent,
    Record,
    ResourceKey,
    ResourceVersion,
    SearchPage,
    TenantUnknownError,
)
from fhir_server.storage.postgres import audit, outbox, probes, records, resources, schema
from fhir_server.storage.postgres.group import GroupCommit
from fhir_server.storage.postgres.transaction import PostgresTransaction
from fhir_server.storage.probes import Backlog, PoolUsage
from fhir_server.storage.query import RecordQuery, SearchQuery
from fhir_server.storage.settle import drain

log = logging.getLogger(__name__)
MAX_VERSION = 2**31 - 1  # versions are PostgreSQL ``integer``
SERVER_SETTINGS = {"synchronous_commit": "on", "application_name": "dermbridge"}
OUTBOX_POOL_SIZE = 3
ACQUIRE_TIMEOUT_S = 30.0


async def keep_session(connection: asyncpg.Connection) -> None:
    """The pool's reset between uses, beyond rolling back an open transaction (which asyncpg always does):
    nothing. The engine keeps no session state (its locks are transaction-scoped, its settings startup
    parameters), and the default reset cost a round trip per use."""


class PostgresTenantStore:
    def __init__(self, name: str, pool: asyncpg.Pool, outbox_pool: asyncpg.Pool) -> None:
        self.name = name
        self.pool = pool
        self._outbox_pool = outbox_pool  # leases and acknowledgements: synchronous_commit off
        self.encryption: None = None  # plaintext: ``fhir_server.crypto.store`` wraps an engine to encrypt
        self._recorder = GroupCommit(self._record)

    async def read(self, resource_type: str, id: str) -> ResourceVersion | None:
        async with self.acquire() as conn:
            return await resources.read(conn, resource_type, id)

    async def read_many(self, keys: Sequence[ResourceKey]) -> list[ResourceVersion]:
        async with self.acquire() as conn:
            return await resources.read_many(conn, keys)

    async def vread(self, resource_type: str, id: str, version: int) -> ResourceVersion | None:
        if not 0 < version <= MAX_VERSION:  # the column's range (a larger number names no version: 404, not 500)
            return None
        async with self.acquire() as conn:
            return await resources.vread(conn, resource_type, id, version)

    async def history(self, query: HistoryQuery) -> HistoryPage:
        async with self.acquire() as conn:
            return await resources.history(conn, query)

    async def search(self, query: SearchQuery) -> SearchPage:
        async with self.acquire() as conn:
            return await resources.search(conn, query)

    async def search_versions(self, query: SearchQuery) -> list[ResourceVersion]:
        async with self.acquire() as conn:
            return await resources.search_versions(conn, query)

    async def get_record(self, collection: str, key: str) -> Record | None:
        async with self.acquire() as conn:
            return await records.get(conn, collection, key)

    async def find_records(self, query: RecordQuery) -> list[Record]:
        async with self.acquire() as conn:
            return await records.find(conn, query)

    def pools(self) -> list[asyncpg.Pool]:
        return [self.pool, self._outbox_pool]

    def acquire(self) -> Any:
        """A connection of the pool, waited for at most ``ACQUIRE_TIMEOUT_S``: an exhausted pool (say, every
        connection held by a transaction that waits for another) fails the request instead of stalling it."""
        return self.pool.acquire(timeout=ACQUIRE_TIMEOUT_S)

    async def record_collections(self) -> list[str]:
        async with self.acquire() as conn:
            return await records.collections(conn)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PostgresTransaction]:
        tx = PostgresTransaction(self)
        try:
            yield tx
            await asyncio.shield(tx.commit())
        except BaseException:
            await asyncio.shield(tx.rollback())
            raise
        finally:
            await asyncio.shield(tx.release())

    async def claim_events(self, consumer: str, limit: int, lease_seconds: float) -> list[OutboxEvent]:
        async with self._outbox_pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as conn:
            return await outbox.claim(conn, consumer, limit, lease_seconds)

    async def ack_event(self, consumer: str, seq: int) -> None:
        await self.ack_events(consumer, (seq,))

    async def ack_events(self, consumer: str, seqs: Sequence[int]) -> None:
        if seqs:
            async with self._outbox_pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as conn:
                await outbox.ack(conn, consumer, seqs)

    async def defer_event(self, consumer: str, seq: int, seconds: float) -> None:
        async with self._outbox_pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as conn:
            await outbox.defer(conn, consumer, seq, seconds)

    async def audit_links(self, after_seq: int, limit: int) -> list[AuditLink]:
        async with self.acquire() as conn:
            return await audit.links(conn, after_seq, limit)

    async def append_audit(self, entry: AuditEntry) -> None:
        """Stored and chained at once, with the events recorded concurrently (one group commit)."""
        await self._recorder.add(entry)

    async def _record(self, entries: list[AuditEntry]) -> None:
        async with self.acquire() as conn:
            await audit.record(conn, self.name, entries)

    async def settle_audit(self, indexer: AuditIndexer, batch: int) -> int:
        """Index the chained events not yet indexed (there is no intake to load)."""
        return await drain(self._pending_audit, self._index_audit, indexer, batch)

    async def _pending_audit(self, after_seq: int, limit: int) -> list[AuditEntry]:
        async with self.acquire() as conn:
            return await audit.pending(conn, after_seq, limit)

    async def _index_audit(self, items: Sequence[tuple[int, IndexEntries | None]]) -> int:
        async with self.acquire() as conn:
            return await audit.index(conn, items)

    async def staged_audit(self, after_seq: int, limit: int) -> list[AuditEntry]:
        return []

    async def add_audit_checkpoint(self, checkpoint: AuditCheckpoint) -> None:
        async with self.acquire() as conn:
            await audit.add_checkpoint(conn, checkpoint)

    async def audit_checkpoints(self) -> list[AuditCheckpoint]:
        async with self.acquire() as conn:
            return await audit.checkpoints(conn)

    async def latest_audit_checkpoint(self) -> AuditCheckpoint | None:
        async with self.acquire() as conn:
            return await audit.latest_checkpoint(conn)

    async def audit_staging(self) -> AuditStaging:
        """No intake: loaded and staged are both the last intake seq of links copied from one (or 0)."""
        async with self.acquire() as conn:
            copied = await audit.copied_intake(conn)
        return AuditStaging(copied, copied)

    async def audit_staged_seqs(self, low: int, high: int) -> set[int]:
        async with self.acquire() as conn:
            return await audit.staged_seqs(conn, low, high)

    async def close(self) -> None:
        await self.pool.close()
        await self._outbox_pool.close()

    async def scrub(self) -> None:
        """VACUUM the tenant's tables: dead row versions (an erased patient's) are removed from them.

        PostgreSQL does not zero the freed space nor the WAL; GDPR erasure relies on the destroyed data
        key (everything left is ciphertext), as it does for backups."""
        async with self.acquire() as conn:
            tables = ("resource", "history", "record", "record_field", "blob", "blob_chunk")
            for table in (*tables, *resources.INDEX_TABLE_NAMES):
                await conn.execute(f"VACUUM {table}")


class PostgresEngine:
    """Tenants as schemas of one PostgreSQL database (``dsn``: ``postgresql://user@host:port/db``)."""

    def __init__(self, dsn: str, *, pool_size: int = 20, control_pool_size: int = 2) -> None:
        self.dsn = dsn
        self._pool_size = pool_size
        self._control_pool_size = control_pool_size
        self._control: asyncpg.Pool | None = None
        self._listener: asyncpg.Connection | None = None
        self._relistening: asyncio.Future[None] | None = None
        self._closing = False
        self._stores: dict[str, PostgresTenantStore] = {}
        self._listeners: list[Callable[[str], None]] = []
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        """Connect, migrate (idempotent, one process at a time) and LISTEN for other processes' commits."""
        self._control = await asyncpg.create_pool(
            self.dsn, min_size=1, max_size=self._control_pool_size, server_settings=SERVER_SETTINGS, reset=keep_session
        )
        await self.migrate()
        self._closing = False
        await self._listen()

    async def _listen(self) -> None:
        listener = await asyncpg.connect(self.dsn, server_settings=SERVER_SETTINGS)
        listener.add_termination_listener(self._on_listener_lost)
        await listener.add_listener(outbox.NOTIFY_CHANNEL, self._on_notify)
        self._listener = listener

    def _on_listener_lost(self, connection: Any) -> None:
        if not self._closing and connection is self._listener:
            self._listener = None
            self._relistening = asyncio.ensure_future(self._relisten())

    async def _relisten(self) -> None:
        """LISTEN again after the connection was lost (a server restart, a failover), backing off up to
        5 s; then wake every listener once, for the commits it may have missed meanwhile."""
        delay = 0.1
        while not self._closing:
            try:
                await self._listen()
                break
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("LISTEN connection lost, reconnecting in %.1f s: %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        if self._closing:
            return
        try:
            tenants = await self.tenant_names()
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("after listening again, the tenants could not be listed to wake their listeners: %s", exc)
            return
        for tenant in tenants:
            self._on_notify(None, 0, outbox.NOTIFY_CHANNEL, tenant)

    async def migrate(self) -> None:
        """Bring the control schema and every tenant schema to this version (``dermbridge storage migrate``)."""
        async with self._control_pool().acquire() as conn:
            await schema.migrate(conn)

    async def close(self) -> None:
        self._closing = True
        if self._relistening is not None:
            self._relistening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._relistening
        if self._listener is not None:
            await self._listener.close()
            self._listener = None
        for store in self._stores.values():
            await store.close()
        self._stores.clear()
        if self._control is not None:
            await self._control.close()
            self._control = None

    def _control_pool(self) -> asyncpg.Pool:
        if self._control is None:
            raise RuntimeError("the PostgreSQL engine is not open")
        return self._control

    async def create_tenant(self, name: str) -> None:
        schema.check_tenant_name(name)
        async with self._control_pool().acquire() as conn:
            await schema.create_tenant(conn, name)

    async def tenant_names(self) -> list[str]:
        async with self._control_pool().acquire() as conn:
            return await schema.tenant_names(conn)

    async def tenant(self, name: str) -> PostgresTenantStore:
        """The tenant's store, its pools opened on first use. A name that is malformed or not in the control
        table costs one indexed query (bounded wait for a control connection) and never takes the engine's lock,
        so a flood of unknown names cannot queue first opens, sweeps or ``/readyz`` behind it."""
        store = self._stores.get(name)
        if store is not None:
            return store
        try:
            schema.check_tenant_name(name)
        except ValueError:
            raise TenantUnknownError(name) from None
        async with self._control_pool().acquire(timeout=ACQUIRE_TIMEOUT_S) as conn:
            if not await schema.tenant_exists(conn, name):
                raise TenantUnknownError(name)
        async with self._lock:
            if name not in self._stores:
                pool = await self._pool(name, self._pool_size, synchronous_commit="on")
                outbox_pool = await self._pool(name, OUTBOX_POOL_SIZE, synchronous_commit="off")
                self._stores[name] = PostgresTenantStore(name, pool, outbox_pool)
            return self._stores[name]

    async def _pool(self, tenant: str, size: int, synchronous_commit: str) -> asyncpg.Pool:
        """Connections whose ``search_path`` is the tenant's schema (a startup parameter, so the pool's reset
        keeps it)."""
        settings = {
            **SERVER_SETTINGS,
            "search_path": schema.quote_ident(tenant),
            "synchronous_commit": synchronous_commit,
        }
        return await asyncpg.create_pool(
            self.dsn, min_size=1, max_size=size, server_settings=settings, reset=keep_session
        )

    def add_commit_listener(self, listener: Callable[[str], None]) -> None:
        self._listeners.append(listener)

    # -- storage.probes: for /readyz and /metrics ---------------------------------------------
    async def outbox_backlog(self, tenant: str) -> list[Backlog]:
        """On the control pool, schema-qualified: a scrape opens no tenant pools (a role that serves no
        traffic, say ``audit``, would otherwise hold ``pool_size`` connections per tenant for its metrics)."""
        schema.check_tenant_name(tenant)
        async with self._control_pool().acquire(timeout=ACQUIRE_TIMEOUT_S) as conn:
            return await probes.outbox_backlog(conn, schema.quote_ident(tenant))

    async def audit_staged(self, tenant: str) -> int:
        """Always 0: PostgreSQL writes AuditEvents into the chain at once (no staging intake), so no query."""
        return 0

    async def schema_current(self, tenant: str) -> bool:
        async with self._control_pool().acquire(timeout=ACQUIRE_TIMEOUT_S) as conn:
            return await probes.schema_current(conn, tenant)

    def pool_usage(self) -> PoolUsage:
        """The tenants' pools (resources and outbox) and the control pool; not the LISTEN connection."""
        pools = [p for store in list(self._stores.values()) for p in store.pools()]
        return probes.pool_usage([*pools, *([self._control] if self._control is not None else [])])

    def _on_notify(self, connection: Any, pid: int, channel: str, tenant: str) -> None:
        for listener in self._listeners:
            try:
                listener(tenant)
            except Exception:
                log.exception("commit listener failed")


if TYPE_CHECKING:  # the engine keeps the port (checked by mypy, nothing at run time)
    _PORT_CHECK: MigratingEngine = PostgresEngine("")
