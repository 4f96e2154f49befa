"""The audit hash chain (with the events still to be indexed) and its signed checkpoints."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Sequence

from fhir_server.storage.port import AuditCheckpoint, AuditEntry, AuditLink, IndexEntries, ResourceVersion
from fhir_server.storage.sqlite import ops

GENESIS = "0" * 64


def chain_hash(previous: str, content_hash: str) -> str:
    return hashlib.sha256(bytes.fromhex(previous) + bytes.fromhex(content_hash)).hexdigest()


def _link(conn: sqlite3.Connection, resource_id: str, content_hash: str, indexed: int) -> None:
    row = conn.execute("SELECT chain_hash FROM audit_chain ORDER BY seq DESC LIMIT 1").fetchone()
    conn.execute(
        "INSERT INTO audit_chain (resource_id, content_hash, chain_hash, indexed) VALUES (?,?,?,?)",
        (resource_id, content_hash, chain_hash(row[0] if row else GENESIS, content_hash), indexed),
    )


def append(conn: sqlite3.Connection, resource_id: str, content: bytes) -> None:
    """Chain an AuditEvent stored (and indexed) as a resource in the same transaction."""
    _link(conn, resource_id, hashlib.sha256(content).hexdigest(), 1)


def log(conn: sqlite3.Connection, entry: AuditEntry) -> None:
    """Store a server-built AuditEvent and chain it; its index rows come later (``index``)."""
    ops.write(
        conn, ResourceVersion("AuditEvent", entry.resource_id, 1, entry.last_updated, entry.content, "POST"), None
    )
    _link(conn, entry.resource_id, entry.content_hash, 0)


_UNINDEXED = (
    "SELECT c.seq, c.resource_id, h.last_updated, h.content, c.content_hash, r.rid FROM audit_chain c "
    "JOIN resource r ON r.type = 'AuditEvent' AND r.id = c.resource_id "
    "JOIN history h ON h.rid = r.rid AND h.version = 1 WHERE c.indexed = 0"
)


_UNINDEXED_RID = (
    "SELECT r.rid FROM audit_chain c JOIN resource r ON r.type = 'AuditEvent' AND r.id = c.resource_id "
    "WHERE c.seq = ? AND c.indexed = 0"
)


def pending(conn: sqlite3.Connection, after_seq: int, limit: int) -> list[AuditEntry]:
    rows = conn.execute(f"{_UNINDEXED} AND c.seq > ? ORDER BY c.seq LIMIT ?", (after_seq, limit)).fetchall()
    return [AuditEntry(*row[:5]) for row in rows]


def index(conn: sqlite3.Connection, items: Sequence[tuple[int, IndexEntries]]) -> int:
    """Add the index rows of stored AuditEvents (by chain seq); returns how many were indexed."""
    indexed = 0
    for seq, entries in items:
        row = conn.execute(_UNINDEXED_RID, (seq,)).fetchone()
        if row is None:  # another process got there first
            continue
        ops.insert_index(conn, row[0], "AuditEvent", entries)
        conn.execute("UPDATE audit_chain SET indexed = 1 WHERE seq = ?", (seq,))
        indexed += 1
    return indexed


def links(conn: sqlite3.Connection, after_seq: int, limit: int) -> list[AuditLink]:
    rows = conn.execute(
        "SELECT seq, resource_id, content_hash, chain_hash FROM audit_chain WHERE seq > ? ORDER BY seq LIMIT ?",
        (after_seq, limit),
    ).fetchall()
    return [AuditLink(*row) for row in rows]


def add_checkpoint(conn: sqlite3.Connection, checkpoint: AuditCheckpoint) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO audit_checkpoint (seq, chain_hash, signature, algorithm, key_id) VALUES (?,?,?,?,?)",
        (checkpoint.seq, checkpoint.chain_hash, checkpoint.signature, checkpoint.algorithm, checkpoint.key_id),
    )


def checkpoints(conn: sqlite3.Connection) -> list[AuditCheckpoint]:
    rows = conn.execute("SELECT seq, chain_hash, signature, algorithm, key_id FROM audit_checkpoint ORDER BY seq")
    return [AuditCheckpoint(*row) for row in rows]
