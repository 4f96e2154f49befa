"""The audit hash chain and its signed checkpoints in one tenant schema.

Events are chained as they are recorded: PostgreSQL has no single writer to keep them waiting, so this
engine needs no intake (its ``staged_audit`` is empty) and records concurrent events in one group
commit instead. The chain is serialised per tenant by a transaction-scoped advisory lock
(``audit_lock``): each link hashes the one before it. Index rows follow at the next ``settle_audit``.
Links copied from an engine with an intake keep their intake seq (``staged_seq``): the signed heads
that cover those seqs still verify here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import asyncpg

from fhir_server.storage.port import AuditCheckpoint, AuditEntry, AuditLink, IndexEntries, ResourceVersion
from fhir_server.storage.postgres import resources
from fhir_server.storage.postgres.schema import xact_lock

GENESIS = "0" * 64


def chain_hash(previous: str, content_hash: str) -> str:
    return hashlib.sha256(bytes.fromhex(previous) + bytes.fromhex(content_hash)).hexdigest()


def content_hash(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


async def audit_lock(conn: asyncpg.Connection, tenant: str) -> None:
    await xact_lock(conn, f"{tenant}:audit")


async def link(conn: asyncpg.Connection, links: Sequence[tuple[str, str, bool, int | None]]) -> None:
    """Chain (resource id, content hash, indexed, staging seq) in order; the caller holds ``audit_lock``."""
    head = await conn.fetchrow("SELECT seq, chain_hash FROM audit_chain ORDER BY seq DESC LIMIT 1")
    seq, previous = (head["seq"], head["chain_hash"]) if head else (0, GENESIS)
    rows = []
    for resource_id, content_hash, indexed, staged_seq in links:
        seq, previous = seq + 1, chain_hash(previous, content_hash)
        rows.append((seq, resource_id, content_hash, previous, indexed, staged_seq))
    await conn.executemany(
        "INSERT INTO audit_chain (seq, resource_id, content_hash, chain_hash, indexed, staged_seq) "
        "VALUES ($1, $2, $3, $4, $5, $6)",
        rows,
    )


def stored_version(entry: AuditEntry) -> ResourceVersion:
    return ResourceVersion("AuditEvent", entry.resource_id, 1, entry.last_updated, entry.content, "POST")


async def record(conn: asyncpg.Connection, tenant: str, entries: Sequence[AuditEntry]) -> None:
    """Store and chain finished AuditEvents in one transaction (a group commit); indexed later."""
    async with conn.transaction():
        await append(conn, tenant, [(e.resource_id, e.content_hash, e) for e in entries])


async def append(conn: asyncpg.Connection, tenant: str, events: Sequence[tuple[str, str, AuditEntry | None]]) -> None:
    """Chain (resource id, content hash, entry) in the caller's transaction; an entry is stored as the
    AuditEvent's version 1 and left to index, None chains an event the transaction wrote itself."""
    await audit_lock(conn, tenant)
    stored = [entry for _, _, entry in events if entry is not None]
    await resources.write_batch(conn, [(stored_version(entry), None) for entry in stored])
    await link(
        conn, [(rid, digest, entry is None, entry.seq or None if entry else None) for rid, digest, entry in events]
    )


def _entry(row: asyncpg.Record) -> AuditEntry:
    return AuditEntry(row[0], row[1], row[2], row[3], row[4])


_UNINDEXED = (
    "SELECT c.seq, c.resource_id, h.last_updated, h.content, c.content_hash, r.rid FROM audit_chain c "
    "JOIN resource r ON r.type = 'AuditEvent' AND r.id = c.resource_id "
    "JOIN history h ON h.rid = r.rid AND h.version = 1 WHERE NOT c.indexed"
)


async def pending(conn: asyncpg.Connection, after_seq: int, limit: int) -> list[AuditEntry]:
    rows = await conn.fetch(f"{_UNINDEXED} AND c.seq > $1 ORDER BY c.seq LIMIT $2", after_seq, limit)
    return [_entry(row) for row in rows]


async def index(conn: asyncpg.Connection, items: Sequence[tuple[int, IndexEntries | None]]) -> int:
    """Add the index rows of stored AuditEvents (by chain seq); returns how many were indexed.

    The events' chain rows are locked first (``FOR UPDATE``): of two processes indexing the same
    events, the second finds them indexed and skips them."""
    wanted = {seq: entries for seq, entries in items if entries is not None}
    if not wanted:
        return 0
    async with conn.transaction():
        rows = await conn.fetch(
            "SELECT c.seq, r.rid FROM audit_chain c JOIN resource r ON r.type = 'AuditEvent' AND r.id = c.resource_id "
            "WHERE c.seq = ANY($1::int8[]) AND NOT c.indexed FOR UPDATE OF c",
            list(wanted),
        )
        await resources.insert_index(conn, [(row["rid"], "AuditEvent", wanted[row["seq"]]) for row in rows])
        await conn.execute(
            "UPDATE audit_chain SET indexed = true WHERE seq = ANY($1::int8[])", [r["seq"] for r in rows]
        )
    return len(rows)


async def links(conn: asyncpg.Connection, after_seq: int, limit: int) -> list[AuditLink]:
    rows = await conn.fetch(
        "SELECT seq, resource_id, content_hash, chain_hash, staged_seq FROM audit_chain WHERE seq > $1 "
        "ORDER BY seq LIMIT $2",
        after_seq,
        limit,
    )
    return [AuditLink(row[0], row[1], row[2], row[3], row[4]) for row in rows]


_CHECKPOINT = "seq, chain_hash, signature, algorithm, key_id, staged_seq, loaded_seq, signed_at"


async def add_checkpoint(conn: asyncpg.Connection, checkpoint: AuditCheckpoint) -> None:
    """Keep a signed head; at a chain seq signed already, the head covering more of the staging log wins."""
    await conn.execute(
        f"INSERT INTO audit_checkpoint ({_CHECKPOINT}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
        "ON CONFLICT (seq) DO UPDATE SET chain_hash = excluded.chain_hash, signature = excluded.signature, "
        "algorithm = excluded.algorithm, key_id = excluded.key_id, staged_seq = excluded.staged_seq, "
        "loaded_seq = excluded.loaded_seq, signed_at = excluded.signed_at "
        "WHERE COALESCE(excluded.staged_seq, -1) >= COALESCE(audit_checkpoint.staged_seq, -1)",
        checkpoint.seq, checkpoint.chain_hash, checkpoint.signature, checkpoint.algorithm, checkpoint.key_id,
        checkpoint.staged_seq, checkpoint.loaded_seq, checkpoint.signed_at,
    )  # fmt: skip


def _checkpoint(row: asyncpg.Record) -> AuditCheckpoint:
    return AuditCheckpoint(*row)


async def checkpoints(conn: asyncpg.Connection) -> list[AuditCheckpoint]:
    return [_checkpoint(row) for row in await conn.fetch(f"SELECT {_CHECKPOINT} FROM audit_checkpoint ORDER BY seq")]


async def latest_checkpoint(conn: asyncpg.Connection) -> AuditCheckpoint | None:
    row = await conn.fetchrow(
        f"SELECT {_CHECKPOINT} FROM audit_checkpoint ORDER BY seq DESC, COALESCE(staged_seq, -1) DESC LIMIT 1"
    )
    return None if row is None else _checkpoint(row)


async def copied_intake(conn: asyncpg.Connection) -> int:
    """The highest intake seq among links copied from an engine with an intake (0: none)."""
    return int(await conn.fetchval("SELECT COALESCE(MAX(staged_seq), 0) FROM audit_chain WHERE staged_seq > 0"))


async def staged_seqs(conn: asyncpg.Connection, low: int, high: int) -> set[int]:
    """The copied links' intake seqs in (low, high]."""
    rows = await conn.fetch("SELECT staged_seq FROM audit_chain WHERE staged_seq > $1 AND staged_seq <= $2", low, high)
    return {row[0] for row in rows}
