"""The search query as PostgreSQL: SQLite's statements in PostgreSQL's dialect, placeholders numbered."""

from __future__ import annotations

import re

import pytest

from fhir_server.search.request import parse_search
from fhir_server.storage.postgres.translate import numbered, search_statements

QUERIES = [
    ("Patient", [("name", "ang"), ("birthdate", "ge1990-01-01"), ("_sort", "-birthdate")]),
    ("Patient", [("gender:missing", "true"), ("_id", "a,b")]),
    ("Patient", [("_has:Observation:subject:code", "8867-4")]),
    ("Observation", [("subject.name", "ang"), ("value-quantity", "le79")]),
    ("Observation", [("code-value-quantity", "http://loinc.org|8867-4$gt70"), ("_lastUpdated", "gt2026")]),
    ("Patient", [("name:contains", "arine"), ("identifier", "s|1,s|2"), ("_snapshot", "42")]),
]


def test_placeholders_are_numbered_in_order() -> None:
    assert numbered("a = ? AND b IN (?, ?) LIMIT ?") == "a = $1 AND b IN ($2, $3) LIMIT $4"
    assert numbered("SELECT 1") == "SELECT 1"


@pytest.mark.parametrize(("resource_type", "params"), QUERIES)
def test_every_statement_has_one_argument_per_placeholder(resource_type: str, params: list[tuple[str, str]]) -> None:
    query = parse_search((resource_type,), params, lenient=False, default_count=20, max_count=100).query
    page_sql, page_args, count_sql, count_args = search_statements(query)
    for sql, args in ((page_sql, page_args), (count_sql, count_args)):
        assert "?" not in sql
        assert max(int(n) for n in re.findall(r"\$(\d+)", sql)) == len(args)
        assert "+r" not in sql and "deleted = 0" not in sql and "NOT r.deleted" in sql
    assert ("AS snapshot" in page_sql) == (query.snapshot is None)  # the first page reports its snapshot
