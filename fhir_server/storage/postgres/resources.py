"""Resources, their history and their index rows in one tenant schema (the connection's search_path).

Writes go in batches: one multi-row statement (``unnest`` of arrays) per table, whatever the number of
resources a transaction or bundle writes, instead of a round trip per row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import asyncpg

from fhir_server.storage.port import (
    HistoryPage,
    HistoryQuery,
    IndexEntries,
    ResourceKey,
    ResourceVersion,
    SearchPage,
)
from fhir_server.storage.postgres.translate import search_statements
from fhir_server.storage.query import SearchQuery
from fhir_server.storage.sqlite.ops import instant_ts

_VERSION_COLUMNS = "h.type, h.id, h.version, h.last_updated, h.content, h.method"
_CURRENT = "FROM resource r JOIN history h ON h.rid = r.rid AND h.version = r.version"


def _version(row: asyncpg.Record) -> ResourceVersion:
    return ResourceVersion(row[0], row[1], row[2], row[3], row[4], row[5])


async def read(conn: asyncpg.Connection, resource_type: str, id: str) -> ResourceVersion | None:
    row = await conn.fetchrow(
        f"SELECT {_VERSION_COLUMNS} {_CURRENT} WHERE r.type = $1 AND r.id = $2", resource_type, id
    )
    return _version(row) if row else None


async def read_many(conn: asyncpg.Connection, keys: Sequence[ResourceKey]) -> list[ResourceVersion]:
    by_type: dict[str, list[str]] = {}
    for key in keys:
        by_type.setdefault(key.resource_type, []).append(key.id)
    found: dict[ResourceKey, ResourceVersion] = {}
    for resource_type, ids in by_type.items():
        rows = await conn.fetch(
            f"SELECT {_VERSION_COLUMNS} {_CURRENT} WHERE r.type = $1 AND NOT r.deleted AND r.id = ANY($2::text[])",
            resource_type,
            ids,
        )
        found.update((v.key, v) for v in map(_version, rows))
    return [found[key] for key in keys if key in found]


async def vread(conn: asyncpg.Connection, resource_type: str, id: str, version: int) -> ResourceVersion | None:
    row = await conn.fetchrow(
        f"SELECT {_VERSION_COLUMNS} FROM resource r JOIN history h ON h.rid = r.rid "
        "WHERE r.type = $1 AND r.id = $2 AND h.version = $3",
        resource_type,
        id,
        version,
    )
    return _version(row) if row else None


async def history(conn: asyncpg.Connection, query: HistoryQuery) -> HistoryPage:
    conds: list[str] = []
    args: list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if query.resource_type is not None and query.id is not None:
        conds.append(
            f"h.rid = (SELECT rid FROM resource WHERE type = {arg(query.resource_type)} AND id = {arg(query.id)})"
        )
    elif query.resource_type is not None:
        conds.append(f"h.type = {arg(query.resource_type)}")
    if query.since is not None:
        conds.append(f"h.last_updated_ts >= {arg(instant_ts(query.since))}")
    if query.at_most_before is not None:
        conds.append(f"h.last_updated_ts < {arg(instant_ts(query.at_most_before))}")
    where = " AND ".join(conds) or "TRUE"
    total = await conn.fetchval(f"SELECT COUNT(*) FROM history h WHERE {where}", *args)
    rows = await conn.fetch(
        f"SELECT {_VERSION_COLUMNS} FROM history h WHERE {where} "
        f"ORDER BY h.last_updated_ts DESC, h.hid DESC LIMIT {arg(query.count)} OFFSET {arg(query.offset)}",
        *args,
    )
    return HistoryPage([_version(row) for row in rows], int(total))


async def search(conn: asyncpg.Connection, query: SearchQuery) -> SearchPage:
    """One page of keys; the first page's statement also gives the snapshot later pages pass back."""
    snapshot = query.snapshot
    keys: list[ResourceKey] = []
    if query.count > 0:
        page_sql, page_args, _, _ = search_statements(query)
        rows = await conn.fetch(page_sql, *page_args)
        keys = [ResourceKey(row[0], row[1]) for row in rows]
        if snapshot is None and rows:
            snapshot = int(rows[0]["snapshot"])
    if snapshot is None:
        snapshot = int(await conn.fetchval("SELECT COALESCE(MAX(rid), 0) FROM resource"))
    if query.total == "none":
        return SearchPage(keys, None, snapshot)
    _, _, count_sql, count_args = search_statements(replace(query, snapshot=snapshot))
    return SearchPage(keys, int(await conn.fetchval(count_sql, *count_args)), snapshot)


UNBOUNDED = 2**63 - 1  # a snapshot no rid passes: the search sees every committed resource


async def search_versions(conn: asyncpg.Connection, query: SearchQuery) -> list[ResourceVersion]:
    """The page's current versions in one statement (the page keys joined to their versions, in order)."""
    if query.count <= 0:
        return []
    bounded = replace(query, total="none", snapshot=UNBOUNDED if query.snapshot is None else query.snapshot)
    page_sql, page_args, _, _ = search_statements(bounded)
    rows = await conn.fetch(
        f"SELECT {_VERSION_COLUMNS} FROM (SELECT p.type, p.id, row_number() OVER () AS n FROM ({page_sql}) p) p "
        "JOIN resource r ON r.type = p.type AND r.id = p.id JOIN history h ON h.rid = r.rid AND h.version = r.version "
        "ORDER BY p.n",
        *page_args,
    )
    return [_version(row) for row in rows]


# index kind -> (table, its value columns with their array types, the row attributes that fill them)
_INDEX_KINDS: tuple[tuple[str, str, tuple[tuple[str, str, str], ...]], ...] = (
    ("tokens", "idx_token", (("system", "text", "system"), ("code", "text", "code"), ("text", "text", "text"))),
    ("strings", "idx_string", (("norm", "text", "normalized"), ("exact", "text", "exact"))),
    ("dates", "idx_date", (("low", "float8", "low"), ("high", "float8", "high"))),
    ("numbers", "idx_number", (("low", "float8", "low"), ("high", "float8", "high"))),
    ("quantities", "idx_quantity",
     (("low", "float8", "low"), ("high", "float8", "high"), ("system", "text", "system"), ("code", "text", "code"))),
    ("references", "idx_reference",
     (("target_type", "text", "target_type"), ("target_id", "text", "target_id"), ("url", "text", "url"))),
    ("uris", "idx_uri", (("value", "text", "value"),)),
)  # fmt: skip
INDEX_TABLE_NAMES = tuple(table for _, table, _ in _INDEX_KINDS)


def _index_inserts(indexed: Sequence[tuple[Any, str, IndexEntries]], args: list[Any], written: str | None) -> list[str]:
    """One ``INSERT`` CTE per index table with rows, their arrays appended to ``args``. ``indexed``: (rid,
    resource type, entries); with ``written`` (a CTE of the rows just written: rid, type, id), (id, resource
    type, entries) instead, each row's rid taken from that CTE."""
    ctes: list[str] = []
    for kind, table, columns in _INDEX_KINDS:
        rows = [(key, rtype, row) for key, rtype, entries in indexed for row in getattr(entries, kind)]
        if not rows:
            continue
        arrays = [
            ([key for key, _, _ in rows], "int8" if written is None else "text"),
            ([rtype for _, rtype, _ in rows], "text"),
            ([row.param for _, _, row in rows], "text"),
            *(([getattr(row, attribute) for _, _, row in rows], sql_type) for _, sql_type, attribute in columns),
            ([row.group for _, _, row in rows], "int4"),
        ]
        placeholders = []
        for values, sql_type in arrays:
            args.append(values)
            placeholders.append(f"${len(args)}::{sql_type}[]")
        names = ["rid", "type", "param", *(c for c, _, _ in columns), "grp"]
        unnest = f"unnest({', '.join(placeholders)})"
        if written is None:
            select = f"SELECT * FROM {unnest}"
        else:
            rest = names[1:]
            select = (f"SELECT w.rid, {', '.join(f'i.{n}' for n in rest)} FROM {unnest} "
                      f"AS i(key, {', '.join(rest)}) JOIN {written} w ON w.type = i.type AND w.id = i.key")  # fmt: skip
        ctes.append(f"{table}_rows AS (INSERT INTO {table} ({', '.join(names)}) {select})")
    return ctes


async def insert_index(conn: asyncpg.Connection, indexed: Sequence[tuple[int, str, IndexEntries]]) -> None:
    """The index rows of (rid, resource type, entries), every table in one statement."""
    args: list[Any] = []
    ctes = _index_inserts(indexed, args, None)
    if ctes:
        await conn.execute(f"WITH {', '.join(ctes)} SELECT 1", *args)


_WRITE = (
    "WITH w AS (SELECT * FROM unnest($1::text[], $2::text[], $3::int4[], $4::text[], $5::float8[], $6::bool[], "
    "$7::text[], $8::bytea[]) AS w(type, id, version, last_updated, ts, deleted, method, content)), "
    "written AS (INSERT INTO resource (type, id, version, last_updated, last_updated_ts, deleted) "
    "SELECT type, id, version, last_updated, ts, deleted FROM w "
    "ON CONFLICT (type, id) DO UPDATE SET version = excluded.version, last_updated = excluded.last_updated, "
    "last_updated_ts = excluded.last_updated_ts, deleted = excluded.deleted "
    "RETURNING rid, type, id, (xmax = 0) AS inserted), "
    "history_rows AS (INSERT INTO history (rid, type, id, version, last_updated, last_updated_ts, method, content) "
    "SELECT r.rid, w.type, w.id, w.version, w.last_updated, w.ts, w.method, w.content "
    "FROM w JOIN written r ON r.type = w.type AND r.id = w.id)"
)


async def write_batch(conn: asyncpg.Connection, writes: Sequence[tuple[ResourceVersion, IndexEntries | None]]) -> None:
    """Append versions and make them current; each resource at most once in a batch. One statement, whatever
    the batch holds: the resource rows, their history rows, the old index rows of those updated dropped and
    the new ones added (data-modifying CTEs share one snapshot: the deletes never see the rows added).

    A resource written twice at the same version fails on ``history``'s unique (rid, version), so of two
    transactions writing the same version exactly one commits."""
    if not writes:
        return
    versions = [v for v, _ in writes]
    args: list[Any] = [
        [v.resource_type for v in versions],
        [v.id for v in versions],
        [v.version for v in versions],
        [v.last_updated for v in versions],
        [instant_ts(v.last_updated) for v in versions],
        [v.content is None for v in versions],
        [v.method for v in versions],
        [v.content for v in versions],
    ]
    gone = [f"{t}_gone AS (DELETE FROM {t} WHERE rid IN (SELECT rid FROM written WHERE NOT inserted))"
            for t in INDEX_TABLE_NAMES]  # fmt: skip
    added = _index_inserts(
        [(v.id, v.resource_type, index) for v, index in writes if index is not None], args, "written"
    )
    await conn.execute(f"{_WRITE}, {', '.join([*gone, *added])} SELECT 1", *args)
