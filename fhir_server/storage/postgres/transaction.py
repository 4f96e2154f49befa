"""One storage transaction on PostgreSQL: buffered writes, sent in batches, on one pooled connection.

Writes are kept until a read in the transaction that could see them (a search, or a read of a key written)
or its commit, then sent as a few multi-row statements (``resources.write_batch``): a bundle of hundreds of
resources costs a handful of round trips. A read of a resource or record the transaction has not written
leaves them buffered (profiled: a transaction Bundle of PUTs, each reading its current version first, sent
its writes entry by entry, four statements each).
A transaction that reads takes the tenant's transaction lock (a transaction-scoped advisory lock) at
its first read and keeps it to its end: read-modify-write transactions of a tenant run one at a time,
across every process, as the port promises; transactions that only write never wait for it (their
conflicts end in a unique violation, as in the SQLite engine). Audit links and outbox events are
added at the commit, under their own tenant locks, so those locks are held for the commit alone.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

import asyncpg
from asyncpg.transaction import Transaction

from fhir_server.storage.port import AuditEntry, IndexEntries, Record, ResourceKey, ResourceVersion, SearchPage
from fhir_server.storage.postgres import audit, outbox, records, resources
from fhir_server.storage.postgres.schema import xact_lock
from fhir_server.storage.query import RecordQuery, SearchQuery, searched_types

if TYPE_CHECKING:
    from fhir_server.storage.postgres.engine import PostgresTenantStore

Write = tuple[ResourceVersion, IndexEntries | None]
Op = tuple[str, Any]


async def apply(conn: asyncpg.Connection, ops: Sequence[Op]) -> None:
    """Run buffered operations in order; consecutive resource writes go as one batch (each key once)."""
    batch: list[Write] = []
    keys: set[ResourceKey] = set()
    for kind, value in ops:
        if kind == "write" and value[0].key not in keys:
            batch.append(value)
            keys.add(value[0].key)
            continue
        await resources.write_batch(conn, batch)
        batch, keys = [], set()
        if kind == "write":
            batch, keys = [value], {value[0].key}
        elif kind == "put_record":
            await records.put(conn, value)
        elif kind == "delete_record":
            await records.delete(conn, *value)
    await resources.write_batch(conn, batch)


class PostgresTransaction:
    def __init__(self, store: PostgresTenantStore) -> None:
        self._store = store
        self._conn: asyncpg.Connection | None = None
        self._tx: Transaction | None = None
        self._pending: list[Op] = []
        self._audit: list[tuple[str, str, AuditEntry | None]] = []  # (resource id, content hash, entry to store)
        self._events: list[tuple[str, dict[str, Any]]] = []
        self.encryption: None = None  # plaintext: ``fhir_server.crypto.store`` wraps an engine to encrypt
        self._locked = False
        self._ended = False
        self.first_written: ResourceVersion | None = None

    def _check_open(self) -> None:
        if self._ended:
            raise RuntimeError("the storage transaction has ended: a write or read after its commit is a bug")

    async def _flushed(self, lock: bool, flush: bool = True) -> asyncpg.Connection:
        self._check_open()
        if self._conn is None:
            self._conn = await self._store.acquire()
            self._tx = self._conn.transaction()
            await self._tx.start()
        if lock and not self._locked:
            await xact_lock(self._conn, f"{self._store.name}:tx")
            self._locked = True
        if flush:
            pending, self._pending = self._pending, []
            await apply(self._conn, pending)
        return self._conn

    def _writes_any(self, keys: Collection[ResourceKey]) -> bool:
        """Whether a buffered write is of one of ``keys`` (a read of them must send it first)."""
        return any(kind == "write" and value[0].key in keys for kind, value in self._pending)

    def _writes_types(self, query: SearchQuery) -> bool:
        """Whether a buffered write is of a type the search can match on (it must be sent first)."""
        types = searched_types(query)
        writes = [value[0].resource_type for kind, value in self._pending if kind == "write"]
        return any(types is None or resource_type in types for resource_type in writes)

    def _writes_record(self, collection: str, key: str) -> bool:
        return any(
            (kind == "put_record" and (value.collection, value.key) == (collection, key))
            or (kind == "delete_record" and value == (collection, key))
            for kind, value in self._pending
        )

    def _add(self, kind: str, value: Any) -> None:
        self._check_open()
        self._pending.append((kind, value))

    async def read(self, resource_type: str, id: str) -> ResourceVersion | None:
        conn = await self._flushed(True, self._writes_any({ResourceKey(resource_type, id)}))
        return await resources.read(conn, resource_type, id)

    async def read_many(self, keys: Sequence[ResourceKey]) -> list[ResourceVersion]:
        return await resources.read_many(await self._flushed(True, self._writes_any(set(keys))), keys)

    async def search(self, query: SearchQuery) -> SearchPage:
        return await resources.search(await self._flushed(True, self._writes_types(query)), query)

    async def search_versions(self, query: SearchQuery) -> list[ResourceVersion]:
        return await resources.search_versions(await self._flushed(True, self._writes_types(query)), query)

    async def get_record(self, collection: str, key: str) -> Record | None:
        return await records.get(await self._flushed(True, self._writes_record(collection, key)), collection, key)

    async def find_records(self, query: RecordQuery) -> list[Record]:
        return await records.find(await self._flushed(True), query)

    async def write(self, version: ResourceVersion, index: IndexEntries | None) -> None:
        self._add("write", (version, index))
        self.first_written = self.first_written or version

    async def put_record(self, record: Record) -> None:
        self._add("put_record", record)

    async def delete_record(self, collection: str, key: str) -> None:
        self._add("delete_record", (collection, key))

    async def append_event(self, topic: str, payload: dict[str, Any]) -> None:
        self._check_open()
        self._events.append((topic, payload))

    async def chain_audit(self, resource_id: str, content: bytes) -> None:
        """Chained at the commit, after the transaction's writes (the event itself is one of them)."""
        self._check_open()
        self._audit.append((resource_id, audit.content_hash(content), None))

    async def append_audit(self, entry: AuditEntry) -> None:
        """Stored and chained at the commit; indexed by the next ``settle_audit``."""
        self._check_open()
        self._audit.append((entry.resource_id, entry.content_hash, entry))

    async def commit(self) -> None:
        if self._conn is None and not (self._pending or self._audit or self._events):
            return
        conn = await self._flushed(False)
        if self._audit:
            await audit.append(conn, self._store.name, self._audit)
        if self._events:
            await outbox.append_events(conn, self._store.name, self._events)
        assert self._tx is not None
        tx, self._tx = self._tx, None
        await tx.commit()

    async def rollback(self) -> None:
        self._pending = []
        if self._tx is not None:
            tx, self._tx = self._tx, None
            await tx.rollback()

    async def release(self) -> None:
        self._ended = True
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await self._store.pool.release(conn)
