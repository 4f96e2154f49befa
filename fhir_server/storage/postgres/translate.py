"""The engine-neutral search query as PostgreSQL: the SQLite engine's translation, in PostgreSQL's dialect.

The statements are the same subqueries over the same index tables (``sqlite/translate.py``); PostgreSQL
differs in three places: the tombstone flag is a boolean, the planner needs no unary ``+`` hint, and
parameters are numbered (``$1``) instead of ``?``.
"""

from __future__ import annotations

from typing import Any

from fhir_server.storage.query import SearchQuery
from fhir_server.storage.sqlite.translate import SqlBuilder, search_sql


class PostgresSqlBuilder(SqlBuilder):
    def _type_column(self, alias: str, selective: bool) -> str:
        return f"{alias}.type"

    def _live(self, alias: str) -> str:
        return f"NOT {alias}.deleted"


def numbered(sql: str) -> str:
    """``?`` placeholders as ``$1, $2, ...`` (the builders write no ``?`` inside literals)."""
    parts = sql.split("?")
    return "".join(f"{part}${n}" for n, part in enumerate(parts[:-1], start=1)) + parts[-1]


_PAGE_HEAD = "SELECT r.type, r.id FROM resource r WHERE "
_SNAPSHOT_COLUMN = "(SELECT COALESCE(MAX(rid), 0) FROM resource) AS snapshot"


def search_statements(query: SearchQuery) -> tuple[str, list[Any], str, list[Any]]:
    """The page statement and the count statement for a search, with their arguments.

    Without a snapshot, the page statement also returns the snapshot it saw (its highest ``rid``, an
    uncorrelated subquery run once): the first page costs no extra round trip."""
    page_sql, page_args, count_sql, count_args = search_sql(query, PostgresSqlBuilder)
    if query.snapshot is None:
        assert page_sql.startswith(_PAGE_HEAD), page_sql
        page_sql = f"SELECT r.type, r.id, {_SNAPSHOT_COLUMN} FROM resource r WHERE {page_sql[len(_PAGE_HEAD) :]}"
    return numbered(page_sql), page_args, numbered(count_sql), count_args
