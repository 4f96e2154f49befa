"""Server-built AuditEvents are staged on the request path, then loaded (stored, chained, indexed) in the background."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fhir_server.audit.anchor import AnchorFile
from fhir_server.audit.events import rest_event
from fhir_server.audit.signing import load_signer
from fhir_server.audit.trail import AuditTrail, reads_audit_events
from fhir_server.crypto.master import load_master_keys
from fhir_server.crypto.store import EncryptingEngine
from fhir_server.search.request import parse_search
from fhir_server.storage.port import Engine, TenantStore
from fhir_server.storage.sqlite import SqliteEngine

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    engine = EncryptingEngine(SqliteEngine(tmp_path / "var"), load_master_keys(tmp_path / "keys"))
    await engine.open()
    await engine.create_tenant("alpha")
    try:
        yield engine
    finally:
        await engine.close()


def event(status: int) -> dict:
    return rest_event(method="GET", path=["Patient", "p1"], params=[], status=status, who="alpha.client",
                      address="127.0.0.1", entity="Patient/p1", patient="Patient/p1")  # fmt: skip


async def found(store: TenantStore, **params: str) -> list[str]:
    query = parse_search(("AuditEvent",), list(params.items()), lenient=False, default_count=100, max_count=100)
    return [key.id for key in (await store.search(query.query)).keys]


async def test_recorded_events_are_staged_then_loaded_by_the_background_loader(engine: Engine, tmp_path: Path) -> None:
    trail = AuditTrail(load_signer(tmp_path / "keys"), load_delay=0.05)
    store = await engine.tenant("alpha")
    ids = [await trail.record(store, event(status)) for status in (200, 404, 200)]
    assert [entry.resource_id for entry in await store.staged_audit(0, 10)] == ids
    for _ in range(100):  # the loader runs about load_delay after the last event
        if not await store.staged_audit(0, 10):
            break
        await asyncio.sleep(0.02)
    stored = await store.read("AuditEvent", ids[1])
    assert stored is not None and b'"outcome":"4"' in (stored.content or b"")
    assert await found(store, outcome="4") == [ids[1]]
    assert sorted(await found(store, patient="Patient/p1")) == sorted(ids)
    assert [link.resource_id for link in await store.audit_links(0, 10)] == ids  # chained in the order recorded
    await trail.close()


async def test_staged_events_survive_a_restart_and_are_loaded_once(engine: Engine, tmp_path: Path) -> None:
    trail = AuditTrail(load_signer(tmp_path / "keys"), load_delay=3600)
    store = await engine.tenant("alpha")
    first = await trail.record(store, event(200))
    staged = (await store.staged_audit(0, 10))[0]
    await store.append_audit(staged)  # the same event staged twice: loaded once
    await engine.close()  # no flush: what was acknowledged is on disk, in the staging log

    reopened = EncryptingEngine(SqliteEngine(tmp_path / "var"), load_master_keys(tmp_path / "keys"))
    await reopened.open()
    try:
        store = await reopened.tenant("alpha")
        assert await store.read("AuditEvent", first) is None
        assert await AuditTrail(load_signer(tmp_path / "keys")).flush(store) == 1
        assert await store.staged_audit(0, 10) == []
        assert [link.resource_id for link in await store.audit_links(0, 10)] == [first]
        assert await found(store, outcome="0") == [first]
    finally:
        await reopened.close()


async def test_events_loaded_before_a_crash_left_them_staged_are_not_loaded_twice(
    engine: Engine, tmp_path: Path
) -> None:
    trail = AuditTrail(load_signer(tmp_path / "keys"), load_delay=3600)
    store = await engine.tenant("alpha")
    ids = [await trail.record(store, event(200)) for _ in range(3)]
    with sqlite3.connect(tmp_path / "var" / "tenants" / "alpha.auditlog") as conn:
        rows = conn.execute("SELECT * FROM audit_staged ORDER BY seq").fetchall()
    await trail.flush(store)
    with sqlite3.connect(tmp_path / "var" / "tenants" / "alpha.auditlog") as conn:  # as if unstaging never committed
        conn.executemany(
            "INSERT INTO audit_staged VALUES (?, ?, ?, ?, ?)", [(r[0], f"copy{r[0]}", *r[2:]) for r in rows]
        )
    assert await trail.flush(store) == 0  # at or below the seq loaded through: skipped, whatever their ids
    assert await store.staged_audit(0, 10) == []
    assert [link.resource_id for link in await store.audit_links(0, 10)] == ids
    await trail.checkpoint(store)  # as the server does at least every ``head_interval`` and when it stops
    assert (await trail.verify(store)).ok
    fourth = await trail.record(store, event(200))  # staging goes on after them
    assert await trail.flush(store) == 1
    assert [link.resource_id for link in await store.audit_links(0, 10)] == [*ids, fourth]


async def test_a_staging_log_made_anew_continues_after_the_events_loaded(engine: Engine, tmp_path: Path) -> None:
    trail = AuditTrail(load_signer(tmp_path / "keys"), load_delay=3600)
    store = await engine.tenant("alpha")
    ids = [await trail.record(store, event(200)) for _ in range(3)]
    await trail.flush(store)
    await engine.close()
    for path in (tmp_path / "var" / "tenants").glob("alpha.auditlog*"):
        path.unlink()  # lost, or removed by hand: its seqs would start at 1 again
    reopened = EncryptingEngine(SqliteEngine(tmp_path / "var"), load_master_keys(tmp_path / "keys"))
    await reopened.open()
    try:
        store = await reopened.tenant("alpha")
        fourth = await trail.record(store, event(200))
        assert (await store.staged_audit(0, 10))[0].seq > 3
        assert await trail.flush(store) == 1
        assert [link.resource_id for link in await store.audit_links(0, 10)] == [*ids, fourth]
    finally:
        await reopened.close()


async def test_an_event_altered_while_staged_is_loaded_unindexed_and_reported(engine: Engine, tmp_path: Path) -> None:
    trail = AuditTrail(load_signer(tmp_path / "keys"), load_delay=3600)
    store = await engine.tenant("alpha")
    await trail.record(store, event(200))
    altered = await trail.record(store, event(200))
    with sqlite3.connect(tmp_path / "var" / "tenants" / "alpha.auditlog") as conn:
        content = conn.execute("SELECT content FROM audit_staged WHERE resource_id = ?", (altered,)).fetchone()[0]
        conn.execute("UPDATE audit_staged SET content = ? WHERE resource_id = ?",
                     (content[:-1] + bytes([content[-1] ^ 1]), altered))  # fmt: skip
    assert await trail.flush(store) == 2  # both stored and chained; the altered one has no index rows
    assert await found(store, outcome="0") != [] and altered not in await found(store, outcome="0")
    report = await trail.verify(store)
    assert not report.ok and report.broken_at == 2 and "altered" in report.reason


async def test_an_event_altered_before_it_was_indexed_is_skipped_and_reported(engine: Engine, tmp_path: Path) -> None:
    trail = AuditTrail(load_signer(tmp_path / "keys"), load_delay=3600)
    store = await engine.tenant("alpha")
    ids = []
    for _ in range(2):  # recorded inside a caller's transaction: chained at once, indexed later
        async with store.transaction() as tx:
            ids.append(await trail.record_in(store, tx, event(200)))
    altered = ids[1]
    with sqlite3.connect(tmp_path / "var" / "tenants" / "alpha.sqlite") as conn:
        content = conn.execute("SELECT content FROM history WHERE id = ?", (altered,)).fetchone()[0]
        conn.execute("UPDATE history SET content = ? WHERE id = ?", (content[:-1] + bytes([content[-1] ^ 1]), altered))
    assert await trail.flush(store) == 1  # the intact one; the altered one stays unindexed
    assert await trail.flush(store) == 0  # still unindexed: it is not taken for a new one each time
    assert altered not in await found(store, outcome="0")
    report = await trail.verify(store)
    assert not report.ok and report.broken_at == 2 and "altered" in report.reason


async def test_a_database_of_the_first_schema_gains_the_indexed_column(tmp_path: Path) -> None:
    path = tmp_path / "var" / "tenants"
    path.mkdir(parents=True)
    with sqlite3.connect(path / "alpha.sqlite") as conn:
        conn.execute("CREATE TABLE audit_chain (seq INTEGER PRIMARY KEY AUTOINCREMENT, resource_id TEXT NOT NULL, "
                     "content_hash TEXT NOT NULL, chain_hash TEXT NOT NULL)")  # fmt: skip
        conn.execute("INSERT INTO audit_chain (resource_id, content_hash, chain_hash) VALUES ('old', 'aa', 'bb')")
    engine = SqliteEngine(tmp_path / "var")
    await engine.open()
    try:
        store = await engine.tenant("alpha")
        assert await store.pending_audit(0, 10) == []  # events of the old schema were indexed when stored
        assert [link.resource_id for link in await store.audit_links(0, 10)] == ["old"]
    finally:
        await engine.close()


def test_which_requests_flush_the_trail_first() -> None:
    assert reads_audit_events(["AuditEvent"], [])
    assert reads_audit_events([], [("_type", "AuditEvent")])
    assert reads_audit_events(["_history"], [])
    assert reads_audit_events(["Patient", "p1", "$everything"], [])
    assert reads_audit_events(["Patient"], [("_revinclude", "AuditEvent:patient")])
    assert not reads_audit_events(["Observation", "o1"], [])
    assert not reads_audit_events(["Patient"], [("name", "doe")])


async def staged_and_headed(store: TenantStore, tmp_path: Path, count: int) -> AuditTrail:
    """``count`` events staged (none loaded yet) and a signed head covering them, anchored."""
    trail = AuditTrail(load_signer(tmp_path / "keys"), load_delay=3600, anchors=AnchorFile(tmp_path / "anchors"))
    for _ in range(count):
        await trail.record(store, event(200))
    head = await trail.checkpoint(store)
    assert (head.seq, head.loaded_seq, head.staged_seq) == (0, 0, count)
    return trail


async def test_staged_events_deleted_are_found(engine: Engine, tmp_path: Path) -> None:
    store = await engine.tenant("alpha")
    trail = await staged_and_headed(store, tmp_path, 24)
    assert (await trail.verify(store)).ok
    with sqlite3.connect(tmp_path / "var" / "tenants" / "alpha.auditlog") as conn:
        conn.execute("DELETE FROM audit_staged WHERE seq BETWEEN 5 AND 18")
    report = await trail.verify(store)
    assert not report.ok and report.reason.startswith("14 staged events are missing (staging seqs 5..18)")
    assert await trail.flush(store) == 10  # the rest loads; what is gone stays missing
    report = await trail.verify(store)
    assert not report.ok and "staging seqs 5..18" in report.reason


async def test_a_staging_log_deleted_is_found(engine: Engine, tmp_path: Path) -> None:
    store = await engine.tenant("alpha")
    trail = await staged_and_headed(store, tmp_path, 5)
    await engine.close()
    for path in (tmp_path / "var" / "tenants").glob("alpha.auditlog*"):
        path.unlink()
    reopened = EncryptingEngine(SqliteEngine(tmp_path / "var"), load_master_keys(tmp_path / "keys"))
    await reopened.open()
    try:
        store = await reopened.tenant("alpha")
        await trail.record(store, event(200))
        assert (await store.staged_audit(0, 10))[0].seq == 6  # after every seq a head covers: none reused
        report = await trail.verify(store)
        assert not report.ok and "5 staged events are missing (staging seqs 1..5)" in report.reason
    finally:
        await reopened.close()


async def test_a_head_older_than_the_cadence_allows_is_found(engine: Engine, tmp_path: Path) -> None:
    store = await engine.tenant("alpha")
    trail = AuditTrail(load_signer(tmp_path / "keys"), load_delay=3600, head_interval=1)
    await trail.checkpoint(store, signed_at="2026-01-01T00:00:00.000+00:00")  # then no head for months
    await trail.record(store, event(200))
    await trail.flush(store)
    report = await trail.verify(store)
    assert not report.ok and "older than the cadence allows" in report.reason
    await trail.checkpoint(store)
    assert (await trail.verify(store)).ok


async def test_heads_are_signed_on_a_timer_while_events_come(engine: Engine, tmp_path: Path) -> None:
    store = await engine.tenant("alpha")
    trail = AuditTrail(load_signer(tmp_path / "keys"), load_delay=3600, head_interval=0.05)
    await trail.record(store, event(200))  # staged only: nothing loads it, nothing counts to a checkpoint
    for _ in range(400):  # at most 20 s
        head = await store.latest_audit_checkpoint()
        if head is not None and head.staged_seq == 1:
            break
        await asyncio.sleep(0.05)
    assert head is not None and head.staged_seq == 1 and head.seq == 0
    await trail.close()


async def test_a_tenant_never_served_has_no_head_and_does_not_verify(engine: Engine, tmp_path: Path) -> None:
    trail = AuditTrail(load_signer(tmp_path / "keys"))
    report = await trail.verify(await engine.tenant("alpha"))
    assert not report.ok and "no signed head" in report.reason
