"""The SQL statements of one tenant database, as plain functions of a connection.

They run on the engine's threads; the async plumbing lives in ``engine.py``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from fhir_server.storage.port import (
    HistoryPage,
    HistoryQuery,
    IndexEntries,
    OutboxEvent,
    ResourceKey,
    ResourceVersion,
    SearchPage,
)
from fhir_server.storage.query import SearchQuery
from fhir_server.storage.sqlite.translate import search_sql

_VERSION_COLUMNS = "h.type, h.id, h.version, h.last_updated, h.content, h.method"


def instant_ts(instant: str) -> float:
    return datetime.fromisoformat(instant).timestamp()


def _version(row: Sequence[Any]) -> ResourceVersion:
    return ResourceVersion(row[0], row[1], row[2], row[3], row[4], row[5])


def read(conn: sqlite3.Connection, resource_type: str, id: str) -> ResourceVersion | None:
    row = conn.execute(
        f"SELECT {_VERSION_COLUMNS} FROM resource r JOIN history h ON h.rid = r.rid AND h.version = r.version "
        "WHERE r.type = ? AND r.id = ?",
        (resource_type, id),
    ).fetchone()
    return _version(row) if row else None


def read_many(conn: sqlite3.Connection, keys: Sequence[ResourceKey]) -> list[ResourceVersion]:
    found: dict[ResourceKey, ResourceVersion] = {}
    by_type: dict[str, list[str]] = {}
    for key in keys:
        by_type.setdefault(key.resource_type, []).append(key.id)
    for resource_type, ids in by_type.items():
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows = conn.execute(
                f"SELECT {_VERSION_COLUMNS} FROM resource r "
                "JOIN history h ON h.rid = r.rid AND h.version = r.version "
                f"WHERE r.type = ? AND r.deleted = 0 AND r.id IN ({','.join('?' * len(chunk))})",
                (resource_type, *chunk),
            ).fetchall()
            for row in rows:
                version = _version(row)
                found[version.key] = version
    return [found[key] for key in keys if key in found]


def vread(conn: sqlite3.Connection, resource_type: str, id: str, version: int) -> ResourceVersion | None:
    row = conn.execute(
        f"SELECT {_VERSION_COLUMNS} FROM resource r JOIN history h ON h.rid = r.rid "
        "WHERE r.type = ? AND r.id = ? AND h.version = ?",
        (resource_type, id, version),
    ).fetchone()
    return _version(row) if row else None


def history(conn: sqlite3.Connection, query: HistoryQuery) -> HistoryPage:
    conds: list[str] = []
    args: list[Any] = []
    if query.resource_type is not None and query.id is not None:
        conds.append("h.rid = (SELECT rid FROM resource WHERE type = ? AND id = ?)")
        args += [query.resource_type, query.id]
    elif query.resource_type is not None:
        conds.append("h.type = ?")
        args.append(query.resource_type)
    if query.since is not None:
        conds.append("h.last_updated_ts >= ?")
        args.append(instant_ts(query.since))
    if query.at_most_before is not None:
        conds.append("h.last_updated_ts < ?")
        args.append(instant_ts(query.at_most_before))
    where = " AND ".join(conds) or "1"
    total = conn.execute(f"SELECT COUNT(*) FROM history h WHERE {where}", args).fetchone()[0]
    rows = conn.execute(
        f"SELECT {_VERSION_COLUMNS} FROM history h WHERE {where} "
        "ORDER BY h.last_updated_ts DESC, h.hid DESC LIMIT ? OFFSET ?",
        (*args, query.count, query.offset),
    ).fetchall()
    return HistoryPage([_version(row) for row in rows], total)


def search(conn: sqlite3.Connection, query: SearchQuery) -> SearchPage:
    snapshot = query.snapshot
    if snapshot is None:
        snapshot = conn.execute("SELECT COALESCE(MAX(rid), 0) FROM resource").fetchone()[0]
        query = _with_snapshot(query, snapshot)
    page_sql, page_args, count_sql, count_args = search_sql(query)
    keys = [ResourceKey(t, i) for t, i in conn.execute(page_sql, page_args)] if query.count > 0 else []
    total = None
    if query.total != "none":
        total = conn.execute(count_sql, count_args).fetchone()[0]
    return SearchPage(keys, total, snapshot)


def search_versions(conn: sqlite3.Connection, query: SearchQuery) -> list[ResourceVersion]:
    page = search(conn, replace(query, total="none"))
    return read_many(conn, page.keys)


def _with_snapshot(query: SearchQuery, snapshot: int) -> SearchQuery:
    return replace(query, snapshot=snapshot)


def write(conn: sqlite3.Connection, version: ResourceVersion, index: IndexEntries | None) -> None:
    ts = instant_ts(version.last_updated)
    deleted = 1 if version.content is None else 0
    row = conn.execute(
        "SELECT rid FROM resource WHERE type = ? AND id = ?", (version.resource_type, version.id)
    ).fetchone()
    if row is None:
        rid = conn.execute(
            "INSERT INTO resource (type, id, version, last_updated, last_updated_ts, deleted) VALUES (?,?,?,?,?,?)",
            (version.resource_type, version.id, version.version, version.last_updated, ts, deleted),
        ).lastrowid
    else:
        rid = row[0]
        conn.execute(
            "UPDATE resource SET version = ?, last_updated = ?, last_updated_ts = ?, deleted = ? WHERE rid = ?",
            (version.version, version.last_updated, ts, deleted, rid),
        )
    conn.execute(
        "INSERT INTO history (rid, type, id, version, last_updated, last_updated_ts, method, content) "
        "VALUES (?,?,?,?,?,?,?,?)",
        (
            rid,
            version.resource_type,
            version.id,
            version.version,
            version.last_updated,
            ts,
            version.method,
            version.content,
        ),
    )
    if rid is None:
        return
    if row is None:
        if index is not None:
            insert_index(conn, rid, version.resource_type, index)
    else:
        replace_index(conn, rid, version.resource_type, index or IndexEntries())


# index kind -> (table, its value columns, the row attributes that fill them)
_INDEX_INSERTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("tokens", "idx_token", ("system", "code", "text")),
    ("strings", "idx_string", ("norm", "exact")),
    ("dates", "idx_date", ("low", "high")),
    ("numbers", "idx_number", ("low", "high")),
    ("quantities", "idx_quantity", ("low", "high", "system", "code")),
    ("references", "idx_reference", ("target_type", "target_id", "url")),
    ("uris", "idx_uri", ("value",)),
)
_ROW_ATTRIBUTE = {"norm": "normalized"}


def _index_rows(index: IndexEntries, kind: str, columns: tuple[str, ...], rtype: str) -> list[tuple[Any, ...]]:
    """One kind's rows as the values of (type, param, *columns, grp)."""
    attributes = ["param", *(_ROW_ATTRIBUTE.get(c, c) for c in columns), "group"]
    return [(rtype, *(getattr(row, a) for a in attributes)) for row in getattr(index, kind)]


def insert_index(conn: sqlite3.Connection, rid: int, rtype: str, index: IndexEntries) -> None:
    for kind, table, columns in _INDEX_INSERTS:
        rows = _index_rows(index, kind, columns, rtype)
        if rows:
            insert_rows(conn, table, ("type", "param", *columns, "grp"), rid, rows)


def replace_index(conn: sqlite3.Connection, rid: int, rtype: str, index: IndexEntries) -> None:
    """A new version's index rows in place of the previous version's."""
    for kind, table, columns in _INDEX_INSERTS:
        replace_rows(conn, table, ("type", "param", *columns, "grp"), rid, _index_rows(index, kind, columns, rtype))


def insert_rows(
    conn: sqlite3.Connection, table: str, columns: tuple[str, ...], rid: int, rows: Iterable[tuple[Any, ...]]
) -> None:
    marks = ",".join("?" * (len(columns) + 1))
    conn.executemany(f"INSERT INTO {table} (rid, {', '.join(columns)}) VALUES ({marks})", [(rid, *r) for r in rows])


def replace_rows(
    conn: sqlite3.Connection, table: str, columns: tuple[str, ...], rid: int, rows: list[tuple[Any, ...]]
) -> None:
    """Make ``table``'s rows of ``rid`` equal ``rows``, deleting and inserting only those that differ.

    An update usually changes a handful of a resource's index rows (an ImagingStudy gaining an
    instance, a DiagnosticReport its status): rewriting all of them dirtied every page they live
    on, in the table and in each of its indexes.
    """
    wanted = Counter(rows)
    stale: list[tuple[int]] = []
    for rowid, *values in conn.execute(f"SELECT rowid, {', '.join(columns)} FROM {table} WHERE rid = ?", (rid,)):
        key = tuple(values)
        if wanted[key] > 0:
            wanted[key] -= 1
        else:
            stale.append((rowid,))
    if stale:
        conn.executemany(f"DELETE FROM {table} WHERE rowid = ?", stale)
    if fresh := list(wanted.elements()):
        insert_rows(conn, table, columns, rid, fresh)


def append_event(conn: sqlite3.Connection, topic: str, payload: dict[str, Any]) -> None:
    conn.execute(
        "INSERT INTO outbox (topic, payload, created_ts) VALUES (?,?,?)",
        (topic, json.dumps(payload, separators=(",", ":")), time.time()),
    )


def claim_events(conn: sqlite3.Connection, consumer: str, limit: int, lease_seconds: float) -> list[OutboxEvent]:
    now = time.time()
    rows = conn.execute(
        "SELECT o.seq, o.topic, o.payload, COALESCE(d.attempts, 0) FROM outbox o "
        "LEFT JOIN outbox_delivery d ON d.consumer = ? AND d.seq = o.seq "
        "WHERE o.seq > ? AND (d.seq IS NULL OR (d.acked = 0 AND d.lease_until < ?)) ORDER BY o.seq LIMIT ?",
        (consumer, _acked_through(conn, consumer), now, limit),
    ).fetchall()
    conn.executemany(
        "INSERT INTO outbox_delivery (consumer, seq, lease_until, attempts) VALUES (?,?,?,1) "
        "ON CONFLICT (consumer, seq) DO UPDATE SET lease_until = excluded.lease_until, attempts = attempts + 1",
        [(consumer, row[0], now + lease_seconds) for row in rows],
    )
    return [OutboxEvent(row[0], row[1], json.loads(row[2]), row[3] + 1) for row in rows]


def _acked_through(conn: sqlite3.Connection, consumer: str) -> int:
    row = conn.execute("SELECT acked_through FROM outbox_cursor WHERE consumer = ?", (consumer,)).fetchone()
    return int(row[0]) if row else 0


def defer_event(conn: sqlite3.Connection, consumer: str, seq: int, seconds: float) -> None:
    conn.execute(
        "UPDATE outbox_delivery SET lease_until = ? WHERE consumer = ? AND seq = ? AND acked = 0",
        (time.time() + seconds, consumer, seq),
    )


def ack_events(conn: sqlite3.Connection, consumer: str, seqs: Sequence[int]) -> None:
    conn.executemany(
        "UPDATE outbox_delivery SET acked = 1 WHERE consumer = ? AND seq = ?", [(consumer, s) for s in seqs]
    )
    through = _acked_through(conn, consumer)
    first_open = conn.execute(
        "SELECT MIN(o.seq) FROM outbox o LEFT JOIN outbox_delivery d ON d.consumer = ? AND d.seq = o.seq "
        "WHERE o.seq > ? AND COALESCE(d.acked, 0) = 0",
        (consumer, through),
    ).fetchone()[0]
    new_through = (first_open - 1) if first_open is not None else max_event_seq(conn)
    if new_through > through:
        conn.execute(
            "INSERT INTO outbox_cursor (consumer, acked_through) VALUES (?, ?) "
            "ON CONFLICT (consumer) DO UPDATE SET acked_through = excluded.acked_through",
            (consumer, new_through),
        )
        conn.execute("DELETE FROM outbox_delivery WHERE consumer = ? AND seq <= ?", (consumer, new_through))


def max_event_seq(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM outbox").fetchone()[0])
