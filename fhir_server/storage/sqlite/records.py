"""Records (keyed documents with indexed string fields) in one tenant database."""

from __future__ import annotations

import sqlite3
from typing import Any

from fhir_server.storage.port import Record
from fhir_server.storage.query import FieldMatch, RecordQuery
from fhir_server.storage.sqlite import ops


def _glob(pattern: str) -> str:
    """A ``*``/``?`` pattern as SQLite GLOB, with GLOB's own specials taken literally."""
    return "".join(f"[{ch}]" if ch in "[]" else ch for ch in pattern)


def _condition(match: FieldMatch, args: list[Any]) -> str:
    args.append(match.field)
    if match.op == "eq":
        args.append(match.values[0])
        return "f.field = ? AND f.value = ?"
    if match.op == "glob":
        args.append(_glob(match.values[0]))
        return "f.field = ? AND f.value GLOB ?"
    if match.op == "in":
        args.extend(match.values)
        return f"f.field = ? AND f.value IN ({','.join('?' * len(match.values))})"
    low, high = match.values
    conds = ["f.field = ?"]
    if low:
        conds.append("f.value >= ?")
        args.append(low)
    if high:
        conds.append("f.value <= ?")
        args.append(high)
    return " AND ".join(conds)


_FIELD_COLUMNS = ("collection", "field", "value")


def put(conn: sqlite3.Connection, record: Record) -> None:
    fields = [(record.collection, name, value) for name, values in record.fields.items() for value in values]
    row = conn.execute(
        "SELECT rid FROM record WHERE collection = ? AND key = ?", (record.collection, record.key)
    ).fetchone()
    if row is None:
        rid = conn.execute(
            "INSERT INTO record (collection, key, body) VALUES (?,?,?)", (record.collection, record.key, record.body)
        ).lastrowid
        ops.insert_rows(conn, "record_field", _FIELD_COLUMNS, int(rid or 0), fields)
    else:
        conn.execute("UPDATE record SET body = ? WHERE rid = ?", (record.body, row[0]))
        ops.replace_rows(conn, "record_field", _FIELD_COLUMNS, row[0], fields)


def delete(conn: sqlite3.Connection, collection: str, key: str) -> None:
    row = conn.execute("SELECT rid FROM record WHERE collection = ? AND key = ?", (collection, key)).fetchone()
    if row is not None:
        conn.execute("DELETE FROM record_field WHERE rid = ?", (row[0],))
        conn.execute("DELETE FROM record WHERE rid = ?", (row[0],))


def _fields(conn: sqlite3.Connection, rid: int) -> dict[str, tuple[str, ...]]:
    found: dict[str, list[str]] = {}
    for name, value in conn.execute("SELECT field, value FROM record_field WHERE rid = ?", (rid,)):
        found.setdefault(name, []).append(value)
    return {k: tuple(v) for k, v in found.items()}


def get(conn: sqlite3.Connection, collection: str, key: str) -> Record | None:
    row = conn.execute("SELECT rid, body FROM record WHERE collection = ? AND key = ?", (collection, key)).fetchone()
    return Record(collection, key, row[1], _fields(conn, row[0])) if row else None


def find(conn: sqlite3.Connection, query: RecordQuery) -> list[Record]:
    args: list[Any] = [query.collection]
    conds = ["r.collection = ?"]
    for match in query.where:
        inner_args: list[Any] = [query.collection]
        condition = _condition(match, inner_args)
        conds.append(f"r.rid IN (SELECT f.rid FROM record_field f WHERE f.collection = ? AND {condition})")
        args.extend(inner_args)
    if query.after_key is not None:
        conds.append("r.key > ?")
        args.append(query.after_key)
    args.extend([query.limit, query.offset])
    rows = conn.execute(
        f"SELECT r.rid, r.key, r.body FROM record r WHERE {' AND '.join(conds)} ORDER BY r.key LIMIT ? OFFSET ?",
        args,
    ).fetchall()
    return [Record(query.collection, key, body, _fields(conn, rid)) for rid, key, body in rows]


def collections(conn: sqlite3.Connection) -> list[str]:
    return [row[0] for row in conn.execute("SELECT DISTINCT collection FROM record ORDER BY collection")]
