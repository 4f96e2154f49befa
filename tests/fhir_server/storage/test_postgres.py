"""What the PostgreSQL engine adds to the contract: several processes over one database.

Each ``PostgresEngine`` here stands for one DermBridge process (its own pools and LISTEN connection).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest

from fhir_server.search.extract import index_resource
from fhir_server.storage.port import AuditEntry, ResourceKey, ResourceVersion, TenantUnknownError
from fhir_server.storage.postgres import PostgresEngine
from fhir_server.storage.postgres.probes import COUNTED, backlog_sql
from fhir_server.storage.postgres.schema import SCHEMA_VERSION
from fhir_server.storage.probes import backlog_probe, pool_probe, schema_probe
from fhir_server.storage.query import ChainMatch, ParamClause, ReferenceMatch, SearchQuery, StringMatch
from tests.postgres import ThrowawayPostgres

pytestmark = pytest.mark.anyio
WAIT_S = 30  # generous bound on a condition; never a sleep to "wait for" something


@pytest.fixture
def dsn(postgres_server: ThrowawayPostgres) -> str:
    return postgres_server.create_database()


@pytest.fixture
async def processes(dsn: str) -> AsyncIterator[list[PostgresEngine]]:
    engines = [PostgresEngine(dsn, pool_size=4) for _ in range(3)]
    await asyncio.gather(*(e.open() for e in engines))  # three processes starting at once: one migrates at a time
    await asyncio.gather(*(e.create_tenant("clinic-a") for e in engines))
    try:
        yield engines
    finally:
        await asyncio.gather(*(e.close() for e in engines))


async def append(engine: PostgresEngine, n: int) -> None:
    store = await engine.tenant("clinic-a")
    resource = {"resourceType": "Patient", "id": f"p{n}", "name": [{"family": f"Family{n}"}]}
    body = orjson.dumps({**resource, "meta": {"versionId": "1", "lastUpdated": "2026-01-01T00:00:00.000+00:00"}})
    async with store.transaction() as tx:
        await tx.write(ResourceVersion("Patient", f"p{n}", 1, "2026-01-01T00:00:00.000+00:00", body, "POST"),
                       index_resource(resource))  # fmt: skip
        await tx.append_event("resource.created", {"n": n})


async def test_concurrent_starts_migrate_once_and_quote_tenant_names(processes: list[PostgresEngine], dsn: str) -> None:
    assert [await e.tenant_names() for e in processes] == [["clinic-a"]] * 3
    conn = await asyncpg.connect(dsn)
    try:
        versions = await conn.fetch("SELECT name, schema_version FROM _dermbridge.tenant")
        assert [(r["name"], r["schema_version"]) for r in versions] == [("clinic-a", SCHEMA_VERSION)]
        assert await conn.fetchval("SELECT count(*) FROM pg_namespace WHERE nspname = 'clinic-a'") == 1
    finally:
        await conn.close()
    with pytest.raises(ValueError):
        await processes[0].create_tenant('x"; DROP SCHEMA "clinic-a')
    with pytest.raises(ValueError):
        await processes[0].create_tenant("public")
    await append(processes[0], 1)
    found = await (await processes[1].tenant("clinic-a")).read("Patient", "p1")
    assert found is not None and found.version == 1


async def test_a_commit_wakes_the_listeners_of_every_process(processes: list[PostgresEngine]) -> None:
    heard: asyncio.Queue[str] = asyncio.Queue()
    processes[2].add_commit_listener(heard.put_nowait)
    await append(processes[0], 1)
    assert await asyncio.wait_for(heard.get(), WAIT_S) == "clinic-a"


async def test_listeners_listen_again_after_their_connection_is_lost(processes: list[PostgresEngine], dsn: str) -> None:
    heard: asyncio.Queue[str] = asyncio.Queue()
    processes[1].add_commit_listener(heard.put_nowait)
    conn = await asyncpg.connect(dsn)
    try:
        listening = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE query LIKE 'LISTEN%' AND datname = current_database()"
        )
        assert len(listening) == 3
        await conn.execute("SELECT pg_terminate_backend($1)", listening[0]["pid"])
        await conn.execute("SELECT pg_terminate_backend($1)", listening[1]["pid"])
        await conn.execute("SELECT pg_terminate_backend($1)", listening[2]["pid"])
    finally:
        await conn.close()
    assert await asyncio.wait_for(heard.get(), WAIT_S) == "clinic-a"  # the catch-up wake-up after reconnecting
    await append(processes[0], 1)
    assert await asyncio.wait_for(heard.get(), WAIT_S) == "clinic-a"


async def test_workers_of_one_consumer_in_several_processes_share_events_once(processes: list[PostgresEngine]) -> None:
    """Writers in three processes while workers in three claim and acknowledge: every event is delivered,
    none to two workers at once (FOR UPDATE SKIP LOCKED), and no cursor passes an event committed late."""
    total = 60
    delivered: list[int] = []

    async def write(engine: PostgresEngine, first: int) -> None:
        for n in range(first, total, len(processes)):
            await append(engine, n)

    async def work(engine: PostgresEngine, writers: asyncio.Future[list[None]]) -> None:
        store = await engine.tenant("clinic-a")
        while True:
            events = await store.claim_events("worker", 4, lease_seconds=600)
            delivered.extend(e.payload["n"] for e in events)
            await store.ack_events("worker", [e.seq for e in events])
            if not events and writers.done() and len(set(delivered)) == total:
                return
            if not events:
                await asyncio.sleep(0.01)  # a polling worker's pause between empty claims

    writers = asyncio.gather(*(write(e, i) for i, e in enumerate(processes)))
    await asyncio.wait_for(asyncio.gather(writers, *(work(e, writers) for e in processes)), WAIT_S * 2)
    assert sorted(delivered) == list(range(total))


async def test_scrub_vacuums_the_dead_rows_of_a_delete_away(processes: list[PostgresEngine], dsn: str) -> None:
    await append(processes[0], 1)
    store = await processes[0].tenant("clinic-a")
    async with store.transaction() as tx:
        await tx.write(ResourceVersion("Patient", "p1", 2, "2026-01-01T00:00:01.000+00:00", None, "DELETE"), None)
    await store.scrub()
    conn = await asyncpg.connect(dsn)
    try:  # VACUUM reports the dead row versions it removed: none are left in the index tables
        dead = await conn.fetchval(
            "SELECT COALESCE(SUM(n_dead_tup), 0) FROM pg_stat_user_tables "
            "WHERE schemaname = 'clinic-a' AND relname LIKE 'idx_%'"
        )
        vacuumed = await conn.fetchval(
            "SELECT COUNT(*) FROM pg_stat_user_tables "
            "WHERE schemaname = 'clinic-a' AND relname = 'idx_string' AND last_vacuum IS NOT NULL"
        )
    finally:
        await conn.close()
    assert (dead, vacuumed) == (0, 1)
    deleted = await store.read("Patient", "p1")
    assert deleted is not None and deleted.deleted


async def test_a_bad_audit_event_recorded_with_others_fails_alone(processes: list[PostgresEngine]) -> None:
    """Concurrent AuditEvents share one transaction (group commit); one that cannot be stored must not
    take the others with it."""
    store = await processes[0].tenant("clinic-a")

    def entry(n: int, id: str) -> AuditEntry:
        content = orjson.dumps({"resourceType": "AuditEvent", "id": id, "outcome": str(n)})
        return AuditEntry(0, id, "2026-01-01T00:00:00.000+00:00", content, hashlib.sha256(content).hexdigest())

    entries = [entry(n, f"ae{n}") for n in range(8)] + [entry(99, "ae3")]  # ae3 twice: version 1 exists
    results = await asyncio.gather(*(store.append_audit(e) for e in entries), return_exceptions=True)
    assert [isinstance(r, asyncpg.UniqueViolationError) for r in results] == [False] * 8 + [True]
    links = await store.audit_links(0, 100)
    assert sorted(link.resource_id for link in links) == [f"ae{n}" for n in range(8)]
    assert [link.seq for link in links] == list(range(1, 9))


async def test_the_probes_tell_readyz_and_metrics_the_backlog_schema_and_pools(processes: list[PostgresEngine]) -> None:
    engine = processes[0]
    backlog, schema, pools = backlog_probe(engine), schema_probe(engine), pool_probe(engine)
    assert backlog and schema and pools  # before, the engine offered none: /readyz never checked its migrations
    for n in range(3):
        await append(engine, n)
    store = await engine.tenant("clinic-a")
    assert [e.seq for e in await store.claim_events("worker", 2, lease_seconds=600)] == [1, 2]
    await store.ack_events("worker", [1])
    [found] = await backlog.outbox_backlog("clinic-a")
    assert (found.consumer, found.pending) == ("worker", 2) and found.oldest_age_seconds >= 0
    assert await schema.schema_current("clinic-a")
    usage = pools.pool_usage()
    assert usage.size >= 3 and usage.in_use == 0  # the tenant's two pools and the control pool, all idle


def _patient_version(n: int, family: str) -> tuple[ResourceVersion, dict[str, object]]:
    resource = {"resourceType": "Patient", "id": f"p{n}", "name": [{"family": family}]}
    body = orjson.dumps({**resource, "meta": {"versionId": "1", "lastUpdated": "2026-01-01T00:00:00.000+00:00"}})
    return ResourceVersion("Patient", f"p{n}", 1, "2026-01-01T00:00:00.000+00:00", body, "PUT"), resource


async def test_a_read_the_buffered_writes_cannot_change_leaves_them_buffered(processes: list[PostgresEngine]) -> None:
    """Profiled: a transaction Bundle of PUTs (each reads its current version) sent its writes entry by entry;
    a read of another key, record or type now leaves them for the commit, one batch."""
    store = await processes[0].tenant("clinic-a")
    async with store.transaction() as tx:
        version, resource = _patient_version(1, "Buffered")
        await tx.write(version, index_resource(resource))
        assert await tx.read("Patient", "p2") is None
        assert await tx.read_many([ResourceKey("Observation", "o1")]) == []
        assert await tx.get_record("settings", "none") is None
        observations = SearchQuery(
            ("Observation",), (ParamClause("subject", "reference", (ReferenceMatch("Patient", "p1"),)),)
        )
        assert (await tx.search(observations)).keys == []
        assert tx._pending  # still buffered: none of those reads could see the write
        assert await tx.read("Patient", "p1") == version  # a read of the key written sees it
        assert not tx._pending
    assert await store.read("Patient", "p1") == version


async def test_a_search_that_can_see_a_buffered_write_sends_it_first(processes: list[PostgresEngine]) -> None:
    store = await processes[0].tenant("clinic-a")
    async with store.transaction() as tx:
        version, resource = _patient_version(3, "Chained")
        await tx.write(version, index_resource(resource))
        by_name = SearchQuery(("Patient",), (ParamClause("family", "string", (StringMatch("chained"),)),))
        assert [k.id for k in (await tx.search(by_name)).keys] == ["p3"]
        version, resource = _patient_version(4, "Chained")
        await tx.write(version, index_resource(resource))
        chain = ChainMatch(("Patient",), (ParamClause("family", "string", (StringMatch("chained"),)),))
        by_chain = SearchQuery(("Observation",), (ParamClause("subject", "reference", (chain,)),))
        assert (await tx.search(by_chain)).keys == []
        assert not tx._pending  # the chain reaches Patient: the write was sent first


async def test_an_unknown_tenant_never_waits_for_the_engine_lock(processes: list[PostgresEngine]) -> None:
    """A request naming no tenant is answered from one control query, even while a first open holds the lock."""
    engine = processes[0]
    async with engine._lock:  # a slow first open of another tenant
        for name in ("nosuch", "../escape", "public", "x" * 64):
            with pytest.raises(TenantUnknownError):
                await asyncio.wait_for(engine.tenant(name), WAIT_S)
    assert (await engine.tenant("clinic-a")).name == "clinic-a"


def _rows_read(plan: dict[str, Any], relation: str) -> float:
    own = plan.get("Actual Rows", 0) * plan.get("Actual Loops", 1) if plan.get("Relation Name") == relation else 0
    return own + sum(_rows_read(child, relation) for child in plan.get("Plans", []))


async def test_the_backlog_probe_reads_a_bounded_number_of_outbox_rows(
    processes: list[PostgresEngine], dsn: str
) -> None:
    """Every scrape runs it for every tenant: its cost must not grow with the backlog (probes.py)."""
    engine = processes[0]
    await append(engine, 0)
    store = await engine.tenant("clinic-a")
    await store.claim_events("worker", 1, lease_seconds=600)
    await store.ack_events("worker", [1])
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("""INSERT INTO "clinic-a".outbox (topic, payload)
                              SELECT 'resource.created', '{}'::jsonb FROM generate_series(1, 30000)""")  # fmt: skip
        await conn.execute('ANALYZE "clinic-a".outbox')
        [plan] = orjson.loads(
            await conn.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + backlog_sql('"clinic-a"'), COUNTED)
        )
    finally:
        await conn.close()
    assert _rows_read(plan["Plan"], "outbox") <= COUNTED + 10
    [found] = await engine.outbox_backlog("clinic-a")
    assert found.pending == 30000 and found.oldest_age_seconds >= 0
