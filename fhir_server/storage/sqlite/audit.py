"""The audit hash chain, its signed checkpoints, and the staging log of events not yet in it.

A server-built AuditEvent is first appended to the tenant's staging log, a database file of its
own (``stage``): that commit is all a request waits for, and it never waits for the tenant
database's write lock nor makes its readers drop their page cache. ``load`` later moves staged
events into the tenant database, stored, chained and indexed, many in one transaction, and
notes how far it got in the same transaction (``audit_loaded``).
Events written inside a caller's transaction (``log``) are chained at once and indexed later.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Sequence

from fhir_server.storage.port import AuditCheckpoint, AuditEntry, AuditLink, IndexEntries, ResourceVersion
from fhir_server.storage.sqlite import ops
from fhir_server.storage.sqlite.writer import in_transaction

GENESIS = "0" * 64


def chain_hash(previous: str, content_hash: str) -> str:
    return hashlib.sha256(bytes.fromhex(previous) + bytes.fromhex(content_hash)).hexdigest()


def _link(
    conn: sqlite3.Connection, resource_id: str, content_hash: str, indexed: int, staged_seq: int | None = None
) -> None:
    row = conn.execute("SELECT chain_hash FROM audit_chain ORDER BY seq DESC LIMIT 1").fetchone()
    conn.execute(
        "INSERT INTO audit_chain (resource_id, content_hash, chain_hash, indexed, staged_seq) VALUES (?,?,?,?,?)",
        (resource_id, content_hash, chain_hash(row[0] if row else GENESIS, content_hash), indexed, staged_seq),
    )


def append(conn: sqlite3.Connection, resource_id: str, content: bytes) -> None:
    """Chain an AuditEvent stored (and indexed) as a resource in the same transaction."""
    _link(conn, resource_id, hashlib.sha256(content).hexdigest(), 1)


def log(conn: sqlite3.Connection, entry: AuditEntry) -> None:
    """Store a server-built AuditEvent and chain it; its index rows come later (``index``)."""
    ops.write(
        conn, ResourceVersion("AuditEvent", entry.resource_id, 1, entry.last_updated, entry.content, "POST"), None
    )
    _link(conn, entry.resource_id, entry.content_hash, 0, entry.seq or None)


STAGE_CHUNK = 4096  # rows per INSERT: 4 variables each, well under SQLite's limit of 32,766


def stage(conn: sqlite3.Connection, entries: list[AuditEntry]) -> list[BaseException | None]:
    """Append finished AuditEvents to the staging log (a ``SerialWriter`` batch: one group commit).

    One multi-row INSERT is its own transaction: the thread takes the GIL once for the whole
    group, not once per statement, while the loop thread is busy with requests."""
    rows = [(e.resource_id, e.last_updated, e.content, e.content_hash) for e in entries]
    if len(rows) <= STAGE_CHUNK:
        _insert_staged(conn, rows)
    else:
        in_transaction(conn, _insert_chunks, rows)
    return [None] * len(entries)


def _insert_chunks(conn: sqlite3.Connection, rows: Sequence[Sequence[object]]) -> None:
    for start in range(0, len(rows), STAGE_CHUNK):
        _insert_staged(conn, rows[start : start + STAGE_CHUNK])


def _insert_staged(conn: sqlite3.Connection, rows: Sequence[Sequence[object]]) -> None:
    values = ",".join(["(?,?,?,?)"] * len(rows))
    conn.execute(f"INSERT INTO audit_staged (resource_id, last_updated, content, content_hash) VALUES {values}",
                 [value for row in rows for value in row])  # fmt: skip


_STAGED = "SELECT seq, resource_id, last_updated, content, content_hash FROM audit_staged"


def staged(conn: sqlite3.Connection, after_seq: int, limit: int) -> list[AuditEntry]:
    rows = conn.execute(f"{_STAGED} WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)).fetchall()
    return [AuditEntry(*row) for row in rows]


def staged_at(conn: sqlite3.Connection, seqs: Sequence[int]) -> list[AuditEntry]:
    rows = conn.execute(f"{_STAGED} WHERE seq BETWEEN ? AND ?", (min(seqs), max(seqs))).fetchall()
    return [AuditEntry(*row) for row in rows]


def load(conn: sqlite3.Connection, events: Sequence[tuple[int, AuditEntry, IndexEntries | None]]) -> int:
    """Store, chain and index staged events in order (in the tenant database's transaction).

    ``audit_loaded`` keeps the last staging seq loaded, in the same transaction: an event loaded
    already (by another process, or before a crash kept it staged) is skipped. An event whose
    content could not be opened is stored and chained without index rows, for ``verify``."""
    through = loaded_through(conn)
    loaded = 0
    for seq, entry, index in events:
        if seq <= through:
            continue
        through = seq
        if conn.execute(_STORED, (entry.resource_id,)).fetchone() is not None:  # staged twice
            continue
        version = ResourceVersion("AuditEvent", entry.resource_id, 1, entry.last_updated, entry.content, "POST")
        ops.write(conn, version, index)
        _link(conn, entry.resource_id, entry.content_hash, 1, seq)
        loaded += 1
    conn.execute("INSERT OR REPLACE INTO audit_loaded (id, seq) VALUES (0, ?)", (through,))
    return loaded


_STORED = "SELECT 1 FROM resource WHERE type = 'AuditEvent' AND id = ?"


def loaded_through(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT seq FROM audit_loaded WHERE id = 0").fetchone()
    return int(row[0]) if row else 0


def continue_after(conn: sqlite3.Connection, seq: int) -> None:
    """Staging seqs start after ``seq`` (a staging log made anew beside a database that loaded some:
    its events would otherwise be taken for loaded ones). Every process opening the log runs it,
    so in a transaction (``in_transaction``)."""
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'audit_staged'").fetchone()
    if row is None or row[0] < seq:
        conn.execute("DELETE FROM sqlite_sequence WHERE name = 'audit_staged'")
        conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('audit_staged', ?)", (seq,))


def unstage(conn: sqlite3.Connection, through: int) -> None:
    conn.execute("DELETE FROM audit_staged WHERE seq <= ?", (through,))


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


def index(conn: sqlite3.Connection, items: Sequence[tuple[int, IndexEntries | None]]) -> int:
    """Add the index rows of stored AuditEvents (by chain seq); returns how many were indexed.

    An event without entries (its content could not be opened) stays unindexed, for ``verify``."""
    indexed = 0
    for seq, entries in items:
        if entries is None:
            continue
        row = conn.execute(_UNINDEXED_RID, (seq,)).fetchone()
        if row is None:  # another process got there first
            continue
        ops.insert_index(conn, row[0], "AuditEvent", entries)
        conn.execute("UPDATE audit_chain SET indexed = 1 WHERE seq = ?", (seq,))
        indexed += 1
    return indexed


def links(conn: sqlite3.Connection, after_seq: int, limit: int) -> list[AuditLink]:
    rows = conn.execute(
        "SELECT seq, resource_id, content_hash, chain_hash, staged_seq FROM audit_chain WHERE seq > ? "
        "ORDER BY seq LIMIT ?",
        (after_seq, limit),
    ).fetchall()
    return [AuditLink(*row) for row in rows]


def add_checkpoint(conn: sqlite3.Connection, checkpoint: AuditCheckpoint) -> None:
    """Keep a signed head; at a chain seq signed already, the head covering more of the staging log
    wins (two processes may sign the same chain head, and write in either order)."""
    conn.execute(
        f"INSERT INTO audit_checkpoint ({_CHECKPOINT}) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (seq) DO UPDATE SET "
        "chain_hash = excluded.chain_hash, signature = excluded.signature, algorithm = excluded.algorithm, "
        "key_id = excluded.key_id, staged_seq = excluded.staged_seq, loaded_seq = excluded.loaded_seq, "
        "signed_at = excluded.signed_at "
        "WHERE IFNULL(excluded.staged_seq, -1) >= IFNULL(audit_checkpoint.staged_seq, -1)",
        (checkpoint.seq, checkpoint.chain_hash, checkpoint.signature, checkpoint.algorithm, checkpoint.key_id,
         checkpoint.staged_seq, checkpoint.loaded_seq, checkpoint.signed_at),
    )  # fmt: skip


_CHECKPOINT = "seq, chain_hash, signature, algorithm, key_id, staged_seq, loaded_seq, signed_at"


def checkpoints(conn: sqlite3.Connection) -> list[AuditCheckpoint]:
    rows = conn.execute(f"SELECT {_CHECKPOINT} FROM audit_checkpoint ORDER BY seq")
    return [AuditCheckpoint(*row) for row in rows]


def latest_checkpoint(conn: sqlite3.Connection) -> AuditCheckpoint | None:
    row = conn.execute(
        f"SELECT {_CHECKPOINT} FROM audit_checkpoint ORDER BY seq DESC, IFNULL(staged_seq, -1) DESC LIMIT 1"
    ).fetchone()
    return None if row is None else AuditCheckpoint(*row)


def headed_staging(conn: sqlite3.Connection) -> int:
    """The highest staging seq a signed head covers: a staging log made anew continues after it."""
    row = conn.execute("SELECT MAX(staged_seq) FROM audit_checkpoint").fetchone()
    return int(row[0] or 0)


def staged_through(conn: sqlite3.Connection) -> int:
    """The last seq the staging log gave an event (AUTOINCREMENT never gives one twice)."""
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'audit_staged'").fetchone()
    return int(row[0]) if row else 0


def staged_seqs(conn: sqlite3.Connection, low: int, high: int) -> set[int]:
    return {row[0] for row in conn.execute("SELECT seq FROM audit_staged WHERE seq > ? AND seq <= ?", (low, high))}


def chained_staged_seqs(conn: sqlite3.Connection, low: int, high: int) -> set[int]:
    rows = conn.execute("SELECT staged_seq FROM audit_chain WHERE staged_seq > ? AND staged_seq <= ?", (low, high))
    return {row[0] for row in rows}
