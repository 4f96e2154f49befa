"""The audit hash chain, its signed checkpoints and the staging log, in one tenant schema.

The chain is serialised per tenant by a transaction-scoped advisory lock (``audit_lock``): each link
hashes the one before it. The staging log's seqs come from the one-row ``audit_state`` (an UPDATE
under its row lock, in the staging transaction): gapless and given in commit order, which
``dermbridge audit verify`` relies on (a missing staging seq is a deleted event). Loading moves staged
events into the store, the chain and the index, and drops them from the log, in one transaction.
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


async def stage(conn: asyncpg.Connection, entries: Sequence[AuditEntry]) -> None:
    """Append finished AuditEvents to the staging log (one transaction for a whole group)."""
    async with conn.transaction():
        through = await conn.fetchval(
            "UPDATE audit_state SET staged_through = staged_through + $1 WHERE id = 0 RETURNING staged_through",
            len(entries),
        )
        first = int(through) - len(entries) + 1
        await conn.execute(
            "INSERT INTO audit_staged (seq, resource_id, last_updated, content, content_hash) "
            "SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::bytea[], $5::text[])",
            list(range(first, first + len(entries))),
            [e.resource_id for e in entries],
            [e.last_updated for e in entries],
            [e.content for e in entries],
            [e.content_hash for e in entries],
        )


_STAGED = "SELECT seq, resource_id, last_updated, content, content_hash FROM audit_staged"


def _entry(row: asyncpg.Record) -> AuditEntry:
    return AuditEntry(row[0], row[1], row[2], row[3], row[4])


async def staged(conn: asyncpg.Connection, after_seq: int, limit: int) -> list[AuditEntry]:
    return [_entry(r) for r in await conn.fetch(f"{_STAGED} WHERE seq > $1 ORDER BY seq LIMIT $2", after_seq, limit)]


async def load(conn: asyncpg.Connection, tenant: str, items: Sequence[tuple[int, IndexEntries | None]]) -> int:
    """Store, chain and index staged events in staging order, then unstage them; one transaction.

    ``loaded_through`` moves in the same transaction: events loaded already (by another process) are
    skipped, and so is an event whose id is stored already (staged twice)."""
    async with conn.transaction():
        await audit_lock(conn, tenant)
        through = int(await conn.fetchval("SELECT loaded_through FROM audit_state WHERE id = 0 FOR UPDATE"))
        seqs = sorted(seq for seq, _ in items if seq > through)
        index_of = dict(items)
        rows = await conn.fetch(f"{_STAGED} WHERE seq = ANY($1::int8[]) ORDER BY seq", seqs)
        entries = [_entry(row) for row in rows]
        stored = {
            row["id"]
            for row in await conn.fetch(
                "SELECT id FROM resource WHERE type = 'AuditEvent' AND id = ANY($1::text[])",
                [e.resource_id for e in entries],
            )
        }
        fresh: dict[str, AuditEntry] = {}
        for entry in entries:
            if entry.resource_id not in stored and entry.resource_id not in fresh:
                fresh[entry.resource_id] = entry
        await resources.write_batch(conn, [(stored_version(e), index_of[e.seq]) for e in fresh.values()])
        await link(conn, [(e.resource_id, e.content_hash, True, e.seq) for e in fresh.values()])
        if seqs:
            await conn.execute("UPDATE audit_state SET loaded_through = $1 WHERE id = 0", seqs[-1])
        if items:
            await conn.execute("DELETE FROM audit_staged WHERE seq <= $1", max(seq for seq, _ in items))
    return len(fresh)


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
        "SELECT seq, resource_id, content_hash, chain_hash FROM audit_chain WHERE seq > $1 ORDER BY seq LIMIT $2",
        after_seq,
        limit,
    )
    return [AuditLink(row[0], row[1], row[2], row[3]) for row in rows]


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


async def staging(conn: asyncpg.Connection) -> tuple[int, int]:
    """(loaded through, staged through), read together."""
    row = await conn.fetchrow("SELECT loaded_through, staged_through FROM audit_state WHERE id = 0")
    return int(row[0]), int(row[1])


async def staged_seqs(conn: asyncpg.Connection, low: int, high: int) -> set[int]:
    """Staging seqs in (low, high] still staged or chained: one statement, so a load in between is seen once."""
    rows = await conn.fetch(
        "SELECT seq FROM audit_staged WHERE seq > $1 AND seq <= $2 "
        "UNION SELECT staged_seq FROM audit_chain WHERE staged_seq > $1 AND staged_seq <= $2",
        low,
        high,
    )
    return {row[0] for row in rows}
