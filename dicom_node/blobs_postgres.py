"""The DICOM object store inside PostgreSQL (``blobs=postgresql``), as Orthanc's PostgreSQL storage plugin keeps
its attachments in the database: every node reaches the objects through the database it already uses, and a
backup of the database holds them.

Each object is a ``blob`` row of the tenant's schema (``fhir_server.storage.postgres.schema``, step 2) and its
bytes ``blob_chunk`` rows of at most ``CHUNK`` bytes, written with ``COPY`` and read in order through a cursor:
an instance of any size streams in and out in bounded pieces (a single ``bytea`` value is capped at 1 GB and
is read and written whole), each chunk is one modest TOAST value, and deleting an object deletes its rows
(large objects would live in ``pg_largeobject``, outside the tenant's schema: neither dropped with it, nor
moved with it when Citus distributes the schema, and each one would need ``lo_unlink``).

Durability (``dicom_node.blobs``): ``stage`` commits the chunks under a ``blob`` row whose ``key`` is NULL;
``publish``, awaited inside the ingest transaction before it commits, gives the row its key (replacing the
previous object of that key) in a transaction of its own, committed with ``synchronous_commit = on``. So
when the index commits and the sender hears Success, the object is durable; a crash after ``stage`` leaves a
keyless row that ``sweep_incoming`` deletes. The store has its own small pool: a publish never waits for a
connection of the engine's pool, which the ingest transaction awaiting it may be holding the last of.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg

from dicom_node.blobs import HOST, STALE_AFTER_S, BlobKey, process_alive
from dicom_node.iod import UID_PATTERN
from fhir_server.storage.postgres.schema import CONTROL_SCHEMA, quote_ident

CHUNK = 1024 * 1024
POOL_SIZE = 8
ACQUIRE_TIMEOUT_S = 30.0
PAGE = 1000
SERVER_SETTINGS = {"synchronous_commit": "on", "application_name": "dermbridge-blobs"}


@dataclass(frozen=True, slots=True)
class StagedBlob:
    tenant: str
    id: int


def _key(key: BlobKey) -> str:
    return f"{key.study}/{key.series}/{key.instance}"


class PostgresBlobStore:
    """Objects in the tenant schemas of the database at ``dsn`` (the engine's: its migrations made the tables)."""

    def __init__(self, dsn: str, *, pool_size: int = POOL_SIZE) -> None:
        self.dsn = dsn
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._owner = f"{HOST}.{os.getpid()}"

    async def open(self) -> None:
        if self._pool is None:
            self._pool = await asyncpg.create_pool(
                self.dsn, min_size=1, max_size=self._pool_size, server_settings=SERVER_SETTINGS
            )

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    def _acquire(self) -> Any:
        if self._pool is None:
            raise RuntimeError("the PostgreSQL blob store is not open")
        return self._pool.acquire(timeout=ACQUIRE_TIMEOUT_S)

    async def stage(self, tenant: str, data: bytes) -> StagedBlob:
        s = quote_ident(tenant)
        view = memoryview(data)
        async with self._acquire() as conn, conn.transaction():
            blob = await conn.fetchval(
                f"INSERT INTO {s}.blob (size, staged_by) VALUES ($1, $2) RETURNING id", len(data), self._owner
            )
            chunks = ((blob, n, bytes(view[at : at + CHUNK])) for n, at in enumerate(range(0, len(data), CHUNK)))
            await conn.copy_records_to_table(
                "blob_chunk", schema_name=tenant, columns=("blob", "seq", "data"), records=chunks
            )
        return StagedBlob(tenant, int(blob))

    async def publish(self, staged: object, key: BlobKey) -> None:
        assert isinstance(staged, StagedBlob) and staged.tenant == key.tenant
        s = quote_ident(key.tenant)
        async with self._acquire() as conn, conn.transaction():
            await conn.execute(f"DELETE FROM {s}.blob WHERE key = $1", _key(key))
            done = await conn.execute(
                f"UPDATE {s}.blob SET key = $1, study = $2 WHERE id = $3 AND key IS NULL", _key(key), key.study,
                staged.id,
            )  # fmt: skip
            if done != "UPDATE 1":
                raise FileNotFoundError(f"staged object {staged.id} of tenant {key.tenant} is gone")

    async def discard(self, staged: object) -> None:
        assert isinstance(staged, StagedBlob)
        async with self._acquire() as conn:
            await conn.execute(f"DELETE FROM {quote_ident(staged.tenant)}.blob WHERE id = $1 AND key IS NULL",
                               staged.id)  # fmt: skip

    async def chunks(self, key: BlobKey) -> AsyncIterator[bytes]:
        """The object's bytes in order, one chunk at a time (``FileNotFoundError`` when there is none)."""
        s = quote_ident(key.tenant)
        async with self._acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            row = await conn.fetchrow(f"SELECT id, size FROM {s}.blob WHERE key = $1", _key(key))
            if row is None:
                raise FileNotFoundError(f"no object for instance {key.instance}")
            size = 0
            async for chunk in conn.cursor(f"SELECT data FROM {s}.blob_chunk WHERE blob = $1 ORDER BY seq",
                                           row["id"], prefetch=4):  # fmt: skip
                size += len(chunk["data"])
                yield chunk["data"]
            if size != row["size"]:
                raise OSError(f"the object of instance {key.instance} is {size} bytes, {row['size']} were stored")

    async def read(self, key: BlobKey) -> bytes:
        return b"".join([chunk async for chunk in self.chunks(key)])

    async def exists(self, key: BlobKey) -> bool:
        async with self._acquire() as conn:
            found = await conn.fetchval(f"SELECT 1 FROM {quote_ident(key.tenant)}.blob WHERE key = $1", _key(key))
        return found is not None

    async def delete(self, key: BlobKey) -> None:
        async with self._acquire() as conn:
            await conn.execute(f"DELETE FROM {quote_ident(key.tenant)}.blob WHERE key = $1", _key(key))

    async def remove_study(self, tenant: str, study: str) -> int:
        if not UID_PATTERN.match(study):
            raise ValueError(f"not a UID: {study!r}")
        async with self._acquire() as conn:
            done = await conn.execute(
                f"DELETE FROM {quote_ident(tenant)}.blob WHERE study = $1 AND key IS NOT NULL", study
            )
        return int(done.split()[-1])

    async def keys(self, tenant: str) -> AsyncIterator[BlobKey]:
        s, after = quote_ident(tenant), ""
        while True:
            async with self._acquire() as conn:
                rows = await conn.fetch(
                    f"SELECT key FROM {s}.blob WHERE key > $1 ORDER BY key LIMIT {PAGE}", after
                )  # NULL keys (staged) never compare greater
            for row in rows:
                study, series, instance = str(row["key"]).split("/")
                yield BlobKey(tenant, study, series, instance)
            if len(rows) < PAGE:
                return
            after = rows[-1]["key"]

    async def sweep_incoming(self) -> int:
        """Delete staged rows no running store owns: staged by a process of this host that is gone, or older
        than ``STALE_AFTER_S`` (whichever node staged them)."""
        removed = 0
        async with self._acquire() as conn:
            tenants = await conn.fetch(f"SELECT name FROM {CONTROL_SCHEMA}.tenant ORDER BY name")
            for tenant in tenants:
                s = quote_ident(tenant["name"])
                staged = await conn.fetch(
                    f"SELECT id, staged_by, now() - staged_at > make_interval(secs => $1) AS stale FROM {s}.blob "
                    "WHERE key IS NULL", float(STALE_AFTER_S),
                )  # fmt: skip
                gone = [row["id"] for row in staged if row["stale"] or _dead_here(str(row["staged_by"]))]
                if gone:
                    done = await conn.execute(f"DELETE FROM {s}.blob WHERE id = ANY($1) AND key IS NULL", gone)
                    removed += int(done.split()[-1])
        return removed

    async def probe(self) -> None:
        """A connection answers and the control schema is there (``/readyz``)."""
        async with asyncio.timeout(ACQUIRE_TIMEOUT_S), self._acquire() as conn:
            await conn.fetchval(f"SELECT count(*) FROM {CONTROL_SCHEMA}.tenant")


def _dead_here(owner: str) -> bool:
    host, _, pid = owner.rpartition(".")
    return host == HOST and pid.isdigit() and not process_alive(int(pid))
