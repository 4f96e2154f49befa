"""The SQLite engine: one WAL database per tenant, one writer thread, a pool of reader threads.

Writes are serialised through one connection (SQLite allows one writer); reads run
concurrently on their own connections and see the last committed state (WAL snapshot).
Beside each database, the tenant's audit staging log (``audit.stage``) is a file of its own
with its own writer, so that staging an AuditEvent never waits for the database's lock.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from fhir_server.storage.port import (
    AuditCheckpoint,
    AuditEntry,
    AuditIndexer,
    AuditLink,
    AuditStaging,
    HistoryPage,
    HistoryQuery,
    IndexEntries,
    OutboxEvent,
    Record,
    ResourceKey,
    ResourceVersion,
    SearchPage,
    TenantUnknownError,
)
from fhir_server.storage.probes import Backlog, PoolUsage
from fhir_server.storage.query import RecordQuery, SearchQuery
from fhir_server.storage.settle import drain
from fhir_server.storage.sqlite import audit, ops, probes, records, schema
from fhir_server.storage.sqlite.schema import connect, initialise, initialise_staging, staging_path
from fhir_server.storage.sqlite.writer import SerialWriter, Unit, execute, in_transaction, undurable

log = logging.getLogger(__name__)
T = TypeVar("T")
ANALYZE_EVERY_WRITES = 20_000
TENANT_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def check_tenant_name(name: str) -> None:
    if not TENANT_NAME.match(name):
        raise ValueError(f"invalid tenant name {name!r}: lower-case letters, digits and '-', at most 63")


class SqliteTransaction:
    """Reads and writes on the writer connection, inside BEGIN IMMEDIATE ... COMMIT.

    Writes are buffered and sent to the writer thread with the next read or with the commit,
    so that a plain create costs one thread hop, not one per statement. A transaction that
    reads takes the store's write lock at its first read and keeps it until it ends; one that
    only writes never holds it: it joins a group commit. Once it has ended, any use raises: a write
    buffered after the commit would otherwise be dropped without a word.
    """

    def __init__(self, store: SqliteTenantStore) -> None:
        self._store = store
        self._ended = False
        self._pending: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self._begun = False
        self._locked = False
        self.events = 0
        self.first_written: ResourceVersion | None = None
        self.encryption: None = None  # plaintext: ``fhir_server.crypto.store`` wraps an engine to encrypt

    def _add(self, fn: Callable[..., Any], *args: Any) -> None:
        self._check_open()
        self._pending.append((fn, args))

    def _check_open(self) -> None:
        if self._ended:
            raise RuntimeError("the storage transaction has ended: a write or read after its commit is a bug")

    async def _flush_then(self, fn: Callable[..., T] | None, *args: Any) -> T | None:
        self._check_open()
        if not self._locked:
            await self._store._main.lock.acquire()
            self._locked = True
        pending, self._pending = self._pending, []
        begin, self._begun = not self._begun, True
        return await self._store._on_writer(_run_batch, begin, pending, fn, args)

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        result = await self._flush_then(fn, *args)
        return result  # type: ignore[return-value]

    async def read(self, resource_type: str, id: str) -> ResourceVersion | None:
        return await self._read(ops.read, resource_type, id)

    async def read_many(self, keys: Sequence[ResourceKey]) -> list[ResourceVersion]:
        return await self._read(ops.read_many, keys)

    async def search(self, query: SearchQuery) -> SearchPage:
        return await self._read(ops.search, query)

    async def search_versions(self, query: SearchQuery) -> list[ResourceVersion]:
        return await self._read(ops.search_versions, query)

    async def get_record(self, collection: str, key: str) -> Record | None:
        return await self._read(records.get, collection, key)

    async def find_records(self, query: RecordQuery) -> list[Record]:
        return await self._read(records.find, query)

    async def put_record(self, record: Record) -> None:
        self._add(records.put, record)

    async def chain_audit(self, resource_id: str, content: bytes) -> None:
        self._add(audit.append, resource_id, content)

    async def append_audit(self, entry: AuditEntry) -> None:
        self._add(audit.log, entry)

    async def delete_record(self, collection: str, key: str) -> None:
        self._add(records.delete, collection, key)

    async def write(self, version: ResourceVersion, index: IndexEntries | None) -> None:
        self._add(ops.write, version, index)
        self.first_written = self.first_written or version

    async def append_event(self, topic: str, payload: dict[str, Any]) -> None:
        self._add(ops.append_event, topic, payload)
        self.events += 1

    async def commit(self) -> None:
        if self._begun:
            writes = len(self._pending)
            await self._flush_then(execute, "COMMIT")
            self._store.count_writes(writes)
        elif self._pending:
            pending, self._pending = self._pending, []
            await self._store._main.group_commit(pending)

    async def rollback(self) -> None:
        self._pending = []
        if self._begun:
            self._begun = False
            await self._store._on_writer(execute, "ROLLBACK")

    def release(self) -> None:
        self._ended = True
        if self._locked:
            self._locked = False
            self._store._main.lock.release()


def _run_batch(
    conn: sqlite3.Connection,
    begin: bool,
    pending: list[tuple[Callable[..., Any], tuple[Any, ...]]],
    fn: Callable[..., T] | None,
    args: tuple[Any, ...],
) -> T | None:
    if begin:
        conn.execute("BEGIN IMMEDIATE")
    for op, op_args in pending:
        op(conn, *op_args)
    return fn(conn, *args) if fn is not None else None


class SqliteTenantStore:
    def __init__(self, name: str, path: Path, readers: int, on_commit: Callable[[str], None]) -> None:
        self.name = name
        self.path = path
        self.encryption: None = None
        self._on_commit = on_commit
        self._main = SerialWriter(path, f"sqlite-w-{name}", self._count_group)
        initialise(self._main.conn)
        self._staging = SerialWriter(staging_path(path), f"sqlite-s-{name}", batch=audit.stage)
        initialise_staging(self._staging.conn)
        after = max(audit.loaded_through(self._main.conn), audit.headed_staging(self._main.conn))
        in_transaction(self._staging.conn, audit.continue_after, after)
        self._writes_since_analyze = 0
        self._analyzer: asyncio.Future[None] | None = None
        self._read_threads = ThreadPoolExecutor(readers, thread_name_prefix=f"sqlite-r-{name}")
        self._readers: asyncio.Queue[sqlite3.Connection] = asyncio.Queue()
        for _ in range(readers):
            self._readers.put_nowait(connect(str(path)))
        self._reader_count = readers

    async def _on_writer(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._main.run(fn, *args)

    async def _on_reader(self, fn: Callable[..., T], *args: Any) -> T:
        conn = await self._readers.get()
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._read_threads, fn, conn, *args)
        finally:
            self._readers.put_nowait(conn)

    async def read(self, resource_type: str, id: str) -> ResourceVersion | None:
        return await self._on_reader(ops.read, resource_type, id)

    def readers_in_use(self) -> PoolUsage:
        return PoolUsage(self._reader_count, self._reader_count - self._readers.qsize())

    async def read_many(self, keys: Sequence[ResourceKey]) -> list[ResourceVersion]:
        return await self._on_reader(ops.read_many, keys)

    async def vread(self, resource_type: str, id: str, version: int) -> ResourceVersion | None:
        return await self._on_reader(ops.vread, resource_type, id, version)

    async def history(self, query: HistoryQuery) -> HistoryPage:
        return await self._on_reader(ops.history, query)

    async def search(self, query: SearchQuery) -> SearchPage:
        return await self._on_reader(ops.search, query)

    async def search_versions(self, query: SearchQuery) -> list[ResourceVersion]:
        return await self._on_reader(ops.search_versions, query)

    async def get_record(self, collection: str, key: str) -> Record | None:
        return await self._on_reader(records.get, collection, key)

    async def find_records(self, query: RecordQuery) -> list[Record]:
        return await self._on_reader(records.find, query)

    async def record_collections(self) -> list[str]:
        return await self._on_reader(records.collections)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqliteTransaction]:
        tx = SqliteTransaction(self)
        try:
            yield tx
            await asyncio.shield(tx.commit())
        except BaseException:
            await asyncio.shield(tx.rollback())
            raise
        finally:
            tx.release()
        if tx.events:
            self._on_commit(self.name)

    def _count_group(self, units: list[Unit]) -> None:
        self.count_writes(sum(len(unit) for unit in units))

    def count_writes(self, n: int) -> None:
        """Refresh the planner's statistics as the database grows (bounded ANALYZE on the writer)."""
        self._writes_since_analyze += n
        if self._writes_since_analyze >= ANALYZE_EVERY_WRITES:
            self._writes_since_analyze = 0
            self._analyzer = asyncio.ensure_future(self._analyze())

    async def _analyze(self) -> None:
        await self._main.locked(schema.analyze)

    async def scrub(self) -> None:
        for _ in range(50):
            if await self._main.locked(schema.scrub):
                return
            await asyncio.sleep(0.05)  # a reader still holds an old snapshot
        log.warning("tenant %s: the WAL stayed busy; it is truncated at the next checkpoint", self.name)

    async def audit_links(self, after_seq: int, limit: int) -> list[AuditLink]:
        return await self._on_reader(audit.links, after_seq, limit)

    async def append_audit(self, entry: AuditEntry) -> None:
        await self._staging.group_commit(entry)

    async def staged_audit(self, after_seq: int, limit: int) -> list[AuditEntry]:
        return await self._staging.run(audit.staged, after_seq, limit)

    async def settle_audit(self, indexer: AuditIndexer, batch: int) -> int:
        """Load the staging log into the chain (``load_audit``), then index the events chained inside
        callers' transactions (``pending_audit``, ``index_audit``)."""
        loaded = await drain(self.staged_audit, self.load_audit, indexer, batch)
        return loaded + await drain(self.pending_audit, self.index_audit, indexer, batch)

    async def load_audit(self, items: Sequence[tuple[int, IndexEntries | None]]) -> int:
        if not items:
            return 0
        staged = {entry.seq: entry for entry in await self._staging.run(audit.staged_at, [seq for seq, _ in items])}
        events = [(seq, staged[seq], index) for seq, index in items if seq in staged]
        loaded = await self._main.locked(in_transaction, audit.load, events)  # durable before they leave the log
        self.count_writes(loaded)
        # undone by a crash, or failing here: they stay staged, and the next load skips them
        await self._staging.locked(undurable, audit.unstage, max(seq for seq, _ in items))
        return loaded

    async def pending_audit(self, after_seq: int, limit: int) -> list[AuditEntry]:
        return await self._on_reader(audit.pending, after_seq, limit)

    async def index_audit(self, items: Sequence[tuple[int, IndexEntries | None]]) -> int:
        if not items:
            return 0
        indexed = await self._main.locked(undurable, audit.index, items)
        self.count_writes(indexed)
        return indexed

    async def add_audit_checkpoint(self, checkpoint: AuditCheckpoint) -> None:
        await self._main.locked(in_transaction, audit.add_checkpoint, checkpoint)

    async def audit_checkpoints(self) -> list[AuditCheckpoint]:
        return await self._on_reader(audit.checkpoints)

    async def latest_audit_checkpoint(self) -> AuditCheckpoint | None:
        return await self._on_reader(audit.latest_checkpoint)

    async def audit_staging(self) -> AuditStaging:
        """Loaded first: an event loaded in between is then counted staged, never lost."""
        loaded = await self._on_reader(audit.loaded_through)
        return AuditStaging(loaded, await self._staging.run(audit.staged_through))

    async def audit_staged_seqs(self, low: int, high: int) -> set[int]:
        staged = await self._staging.run(audit.staged_seqs, low, high)  # then the chain: a load moves them there
        return staged | await self._on_reader(audit.chained_staged_seqs, low, high)

    # A delivery's lease and acknowledgement do not wait for the disk (``undurable``): the outbox is
    # at-least-once, so every consumer already handles an event delivered again (a crash between its
    # work and its acknowledgement), and that is all a lease or an acknowledgement undone by a crash of
    # the machine can cause. A process killed -9 loses neither: the commit is in the OS's cache. The
    # events themselves commit durably with the writes that raise them.
    async def claim_events(self, consumer: str, limit: int, lease_seconds: float) -> list[OutboxEvent]:
        return await self._main.locked(undurable, ops.claim_events, consumer, limit, lease_seconds)

    async def ack_event(self, consumer: str, seq: int) -> None:
        await self.ack_events(consumer, (seq,))

    async def defer_event(self, consumer: str, seq: int, seconds: float) -> None:
        await self._main.locked(undurable, ops.defer_event, consumer, seq, seconds)

    async def ack_events(self, consumer: str, seqs: Sequence[int]) -> None:
        if not seqs:
            return
        await self._main.locked(undurable, ops.ack_events, consumer, seqs)

    def close(self) -> None:
        self._main.close()
        self._staging.close()
        while not self._readers.empty():
            self._readers.get_nowait().close()
        self._read_threads.shutdown()


class SqliteEngine:
    """Tenants as database files under ``<data_dir>/tenants``."""

    def __init__(self, data_dir: Path, readers: int = 4) -> None:
        self.directory = data_dir / "tenants"
        self._readers = readers
        self._stores: dict[str, SqliteTenantStore] = {}
        self._listeners: list[Callable[[str], None]] = []
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        """The tenants' directory, created 0700 (its files are created 0600: ``create_private``)."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    async def close(self) -> None:
        for store in self._stores.values():
            await asyncio.to_thread(store.close)
        self._stores.clear()

    def _path(self, name: str) -> Path:
        check_tenant_name(name)
        return self.directory / f"{name}.sqlite"

    async def create_tenant(self, name: str) -> None:
        path = self._path(name)
        async with self._lock:
            if name not in self._stores:
                self._stores[name] = await asyncio.to_thread(self._open_store, name, path)

    async def tenant_names(self) -> list[str]:
        return sorted(p.stem for p in self.directory.glob("*.sqlite"))

    async def tenant(self, name: str) -> SqliteTenantStore:
        store = self._stores.get(name)
        if store is not None:
            return store
        try:
            path = self._path(name)
        except ValueError as exc:
            raise TenantUnknownError(name) from exc
        if not path.exists():
            raise TenantUnknownError(name)
        async with self._lock:
            if name not in self._stores:
                self._stores[name] = await asyncio.to_thread(self._open_store, name, path)
            return self._stores[name]

    def _open_store(self, name: str, path: Path) -> SqliteTenantStore:
        return SqliteTenantStore(name, path, self._readers, self._notify)

    def add_commit_listener(self, listener: Callable[[str], None]) -> None:
        self._listeners.append(listener)

    # -- storage.probes: for /readyz and /metrics ---------------------------------------------
    async def outbox_backlog(self, tenant: str) -> list[Backlog]:
        return await (await self.tenant(tenant))._on_reader(probes.outbox_backlog)

    async def schema_current(self, tenant: str) -> bool:
        return await (await self.tenant(tenant))._on_reader(probes.schema_current)

    def pool_usage(self) -> PoolUsage:
        """The tenants' reader pools (the writer connections are one per tenant and file, always open)."""
        usages = [store.readers_in_use() for store in list(self._stores.values())]
        return PoolUsage(sum(u.size for u in usages), sum(u.in_use for u in usages))

    def _notify(self, tenant: str) -> None:
        for listener in self._listeners:
            try:
                listener(tenant)
            except Exception:
                log.exception("commit listener failed")
