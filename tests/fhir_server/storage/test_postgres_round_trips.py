"""Round trips the PostgreSQL engine spends on its background traffic, counted on the real connections.

Profiled with ``bench/pg_latency.py``: on one client, the outbox consumers' claims and the tenant listing
of every outbox round sent more statements than the request they followed, competing with it for the
machine. Each test counts the statements asyncpg sends (``Connection._execute`` and
``Connection._executemany``, which every query method goes through; BEGIN and COMMIT included): a count,
never a timing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import asyncpg
import pytest

from fhir_server.search.extract import index_resource
from fhir_server.storage.port import ResourceKey
from fhir_server.storage.postgres import PostgresEngine
from fhir_server.storage.query import ParamClause, SearchQuery, StringMatch
from tests.fhir_server.storage.test_postgres import _patient_version, append
from tests.postgres import ThrowawayPostgres

pytestmark = pytest.mark.anyio


@pytest.fixture
async def engine(postgres_server: ThrowawayPostgres) -> AsyncIterator[PostgresEngine]:
    opened = PostgresEngine(postgres_server.create_database(), pool_size=4)
    await opened.open()
    await opened.create_tenant("clinic-a")
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The statements sent to the server, in order, by any connection of this process."""
    statements: list[str] = []
    for name in ("_execute", "_executemany"):
        original = getattr(asyncpg.connection.Connection, name)

        def counting(self: Any, query: str, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            statements.append(" ".join(query.split()))
            return _original(self, query, *args, **kwargs)

        monkeypatch.setattr(asyncpg.connection.Connection, name, counting)
    original_execute = asyncpg.connection.Connection.execute

    async def execute(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:  # simple queries: BEGIN, COMMIT, reset
        if not args:
            statements.append(" ".join(query.split()))
        return await original_execute(self, query, *args, **kwargs)

    monkeypatch.setattr(asyncpg.connection.Connection, "execute", execute)
    yield statements


async def test_listing_the_tenants_is_one_statement_and_no_reset(engine: PostgresEngine, sent: list[str]) -> None:
    """Every outbox round and sweep lists the tenants: it was three round trips (a ``to_regclass`` probe,
    the query, and the pool's default reset, ``RESET ALL`` and co, at the release)."""
    assert await engine.tenant_names() == ["clinic-a"]
    assert sent == ["SELECT name FROM _dermbridge.tenant ORDER BY name"]


async def test_a_claim_after_a_commit_materialises_in_two_statements(engine: PostgresEngine, sent: list[str]) -> None:
    """Claiming after a commit: the behind check, BEGIN, two statements of the materialising step, COMMIT,
    the claim itself (it was eight: the cursor, the added rows, the acknowledged prefix and the cursor move
    were one statement each)."""
    store = await engine.tenant("clinic-a")
    for n in range(3):
        await append(engine, n)
    assert [e.seq for e in await store.claim_events("worker", 2, lease_seconds=600)] == [1, 2]
    await store.ack_events("worker", [1, 2])
    await append(engine, 3)
    sent.clear()
    assert [e.seq for e in await store.claim_events("worker", 10, lease_seconds=600)] == [3, 4]
    assert len(sent) == 6, sent
    sent.clear()
    assert await store.claim_events("worker", 10, lease_seconds=600) == []  # not behind: the check and the claim
    assert len(sent) == 2, sent
    async with engine._control_pool().acquire() as conn:  # the acknowledged prefix was dropped, the cursor moved
        cursor = await conn.fetchrow('SELECT acked_through, materialised_through FROM "clinic-a".outbox_cursor')
        rows = await conn.fetchval('SELECT array_agg(seq ORDER BY seq) FROM "clinic-a".outbox_delivery')
    assert (cursor["acked_through"], cursor["materialised_through"]) == (2, 4) and rows == [3, 4]


async def test_a_transaction_sends_its_writes_and_index_rows_in_one_statement(
    engine: PostgresEngine, sent: list[str]
) -> None:
    """A create, then an update that replaces index rows: BEGIN, one write statement, COMMIT each (it was
    three and four writes: the resource, its history, the old index rows dropped, the new ones added)."""
    await append(engine, 1)  # with its outbox event: the outbox lock, the events and the NOTIFY follow
    writes = [s for s in sent if "INSERT INTO resource" in s or "idx_" in s or "INSERT INTO history" in s]
    assert len(writes) == 1, writes
    sent.clear()
    store = await engine.tenant("clinic-a")
    version, resource = _patient_version(1, "Renamed")
    async with store.transaction() as tx:
        await tx.write(replace(version, version=2), index_resource(resource))
    assert sent[0] == "BEGIN;" and sent[-1] == "COMMIT;" and len(sent) == 3, sent
    renamed = await store.search(
        SearchQuery(("Patient",), (ParamClause("family", "string", (StringMatch("renamed"),)),))
    )
    assert renamed.keys == [ResourceKey("Patient", "p1")]
    old = await store.search(SearchQuery(("Patient",), (ParamClause("family", "string", (StringMatch("family1"),)),)))
    assert old.keys == []
