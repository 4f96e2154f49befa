"""The audit hash chain and its signed checkpoints in one tenant database."""

from __future__ import annotations

import hashlib
import sqlite3

from fhir_server.storage.port import AuditCheckpoint, AuditLink

GENESIS = "0" * 64


def chain_hash(previous: str, content_hash: str) -> str:
    return hashlib.sha256(bytes.fromhex(previous) + bytes.fromhex(content_hash)).hexdigest()


def append(conn: sqlite3.Connection, resource_id: str, content: bytes) -> None:
    row = conn.execute("SELECT chain_hash FROM audit_chain ORDER BY seq DESC LIMIT 1").fetchone()
    content_hash = hashlib.sha256(content).hexdigest()
    conn.execute(
        "INSERT INTO audit_chain (resource_id, content_hash, chain_hash) VALUES (?,?,?)",
        (resource_id, content_hash, chain_hash(row[0] if row else GENESIS, content_hash)),
    )


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
