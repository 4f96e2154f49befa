"""Records (keyed documents with indexed string fields) in one tenant schema."""

from __future__ import annotations

from typing import Any

import asyncpg

from fhir_server.storage.port import Record
from fhir_server.storage.query import FieldMatch, RecordQuery

_LIKE_SPECIALS = str.maketrans({"\\": "\\\\", "%": "\\%", "_": "\\_", "*": "%", "?": "_"})


def like_pattern(glob: str) -> str:
    """A ``*``/``?`` pattern as LIKE, with LIKE's own specials taken literally (escape ``\\``)."""
    return glob.translate(_LIKE_SPECIALS)


def _condition(match: FieldMatch, args: list[Any]) -> str:
    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    field = f"f.field = {arg(match.field)}"
    if match.op == "eq":
        return f"{field} AND f.value = {arg(match.values[0])}"
    if match.op == "glob":
        return f"{field} AND f.value LIKE {arg(like_pattern(match.values[0]))}"
    if match.op == "in":
        return f"{field} AND f.value = ANY({arg(list(match.values))}::text[])"
    low, high = match.values
    conds = [field]
    if low:
        conds.append(f"f.value >= {arg(low)}")
    if high:
        conds.append(f"f.value <= {arg(high)}")
    return " AND ".join(conds)


async def put(conn: asyncpg.Connection, record: Record) -> None:
    rid = await conn.fetchval(
        "INSERT INTO record (collection, key, body) VALUES ($1, $2, $3) "
        "ON CONFLICT (collection, key) DO UPDATE SET body = excluded.body RETURNING rid",
        record.collection,
        record.key,
        record.body,
    )
    fields = [(name, value) for name, values in record.fields.items() for value in values]
    await conn.execute(
        "WITH gone AS (DELETE FROM record_field WHERE rid = $1) "
        "INSERT INTO record_field (rid, collection, field, value) SELECT $1, $2, * FROM unnest($3::text[], $4::text[])",
        rid,
        record.collection,
        [name for name, _ in fields],
        [value for _, value in fields],
    )


async def delete(conn: asyncpg.Connection, collection: str, key: str) -> None:
    await conn.execute(
        "WITH gone AS (DELETE FROM record WHERE collection = $1 AND key = $2 RETURNING rid) "
        "DELETE FROM record_field WHERE rid IN (SELECT rid FROM gone)",
        collection,
        key,
    )


async def _with_fields(conn: asyncpg.Connection, collection: str, rows: list[asyncpg.Record]) -> list[Record]:
    found: dict[int, dict[str, list[str]]] = {row["rid"]: {} for row in rows}
    for field in await conn.fetch(
        "SELECT rid, field, value FROM record_field WHERE rid = ANY($1::int8[])", list(found)
    ):
        found[field["rid"]].setdefault(field["field"], []).append(field["value"])
    return [
        Record(collection, row["key"], row["body"], {k: tuple(v) for k, v in found[row["rid"]].items()}) for row in rows
    ]


async def get(conn: asyncpg.Connection, collection: str, key: str) -> Record | None:
    row = await conn.fetchrow("SELECT rid, key, body FROM record WHERE collection = $1 AND key = $2", collection, key)
    return (await _with_fields(conn, collection, [row]))[0] if row else None


async def find(conn: asyncpg.Connection, query: RecordQuery) -> list[Record]:
    args: list[Any] = [query.collection]
    conds = ["r.collection = $1"]
    for match in query.where:
        condition = _condition(match, args)
        conds.append(f"r.rid IN (SELECT f.rid FROM record_field f WHERE f.collection = $1 AND {condition})")
    if query.after_key is not None:
        args.append(query.after_key)
        conds.append(f"r.key > ${len(args)}")
    args.extend([query.limit, query.offset])
    rows = await conn.fetch(
        f"SELECT r.rid, r.key, r.body FROM record r WHERE {' AND '.join(conds)} "
        f"ORDER BY r.key LIMIT ${len(args) - 1} OFFSET ${len(args)}",
        *args,
    )
    return await _with_fields(conn, query.collection, rows)


async def collections(conn: asyncpg.Connection) -> list[str]:
    return [row[0] for row in await conn.fetch("SELECT DISTINCT collection FROM record ORDER BY collection")]
