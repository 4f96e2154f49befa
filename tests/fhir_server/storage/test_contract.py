"""The contract every storage engine keeps: versions, transactions, search, outbox, tenant isolation."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_server.search.extract import index_resource
from fhir_server.search.request import parse_search
from fhir_server.storage.port import (
    AuditEntry,
    AuditIndexer,
    Engine,
    HistoryQuery,
    IndexEntries,
    ResourceKey,
    ResourceVersion,
    TenantUnknownError,
)
from fhir_server.storage.query import SearchQuery

pytestmark = pytest.mark.anyio


def version(resource: dict, number: int = 1, instant: str = "2026-01-01T00:00:00.000+00:00") -> ResourceVersion:
    body = {**resource, "meta": {"versionId": str(number), "lastUpdated": instant}}
    return ResourceVersion(resource["resourceType"], resource["id"], number, instant, orjson.dumps(body), "PUT")


def patient(id: str, family: str = "Doe", birth: str = "1970-01-01", **extra: object) -> dict:
    return {"resourceType": "Patient", "id": id, "name": [{"family": family}], "birthDate": birth, **extra}


async def put(engine: Engine, tenant: str, resource: dict, number: int = 1, instant: str | None = None) -> None:
    store = await engine.tenant(tenant)
    v = version(resource, number, instant or f"2026-01-01T00:00:{number:02d}.000+00:00")
    async with store.transaction() as tx:
        await tx.write(v, index_resource(orjson.loads(v.content or b"{}")))
        await tx.append_event("resource.updated", {"id": resource["id"], "version": number})


def query(types: tuple[str, ...], **params: str) -> SearchQuery:
    return parse_search(types, list(params.items()), lenient=False, default_count=100, max_count=1000).query


async def test_tenants(engine: Engine) -> None:
    assert {"alpha", "beta"} <= set(await engine.tenant_names())
    with pytest.raises(TenantUnknownError):
        await engine.tenant("gamma")
    with pytest.raises(ValueError):
        await engine.create_tenant("../escape")


async def test_versions_history_and_tombstones(engine: Engine) -> None:
    store = await engine.tenant("alpha")
    await put(engine, "alpha", patient("p1"), 1)
    await put(engine, "alpha", patient("p1", family="Roe"), 2)
    current = await store.read("Patient", "p1")
    assert current is not None and current.version == 2
    first = await store.vread("Patient", "p1", 1)
    assert first is not None and orjson.loads(first.content or b"")["name"][0]["family"] == "Doe"
    assert await store.vread("Patient", "p1", 3_000_000_000) is None  # beyond any column's range: no version
    async with store.transaction() as tx:
        await tx.write(ResourceVersion("Patient", "p1", 3, "2026-01-01T00:00:03.000+00:00", None, "DELETE"), None)
    deleted = await store.read("Patient", "p1")
    assert deleted is not None and deleted.deleted and deleted.version == 3
    history = await store.history(HistoryQuery("Patient", "p1"))
    assert [v.version for v in history.versions] == [3, 2, 1]
    assert history.total == 3
    since = await store.history(HistoryQuery("Patient", None, since="2026-01-01T00:00:02.000+00:00"))
    assert [v.version for v in since.versions] == [3, 2]
    assert (await store.search(query(("Patient",)))).keys == []
    assert await store.read("Patient", "never") is None


async def test_transaction_rolls_back_writes_and_events(engine: Engine) -> None:
    store = await engine.tenant("alpha")

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with store.transaction() as tx:
            await tx.write(version(patient("p2")), index_resource(patient("p2")))
            await tx.append_event("resource.created", {"id": "p2"})
            assert await tx.read("Patient", "p2") is not None  # a transaction reads its own writes
            raise Boom
    assert await store.read("Patient", "p2") is None
    assert await store.claim_events("c", 10, 30) == []


async def test_tenant_isolation(engine: Engine) -> None:
    await put(engine, "alpha", patient("shared-id", family="Alpha"))
    beta = await engine.tenant("beta")
    assert await beta.read("Patient", "shared-id") is None
    assert (await beta.search(query(("Patient",), name="alpha"))).keys == []
    assert await beta.claim_events("c", 10, 30) == []


async def test_search_semantics(engine: Engine) -> None:
    store = await engine.tenant("alpha")
    await put(engine, "alpha", patient("a", family="Ängström", birth="1980-05"))
    await put(engine, "alpha", patient("b", family="Angel", birth="1990-01-01", gender="male"))
    await put(engine, "alpha", patient("c", family="Zed", birth="2000"))
    obs = {
        "resourceType": "Observation", "id": "o1", "status": "final", "subject": {"reference": "Patient/a"},
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "valueQuantity": {"value": 80, "system": "http://unitsofmeasure.org", "code": "/min"},
    }  # fmt: skip
    await put(engine, "alpha", obs)

    async def found(types: tuple[str, ...] = ("Patient",), **params: str) -> list[str]:
        return sorted(k.id for k in (await store.search(query(types, **params))).keys)

    assert await found(name="ang") == ["a", "b"]
    assert await found(birthdate="1980") == ["a"]
    assert await found(birthdate="lt1985") == ["a"]
    assert await found(birthdate="ge1990-01-01") == ["b", "c"]
    assert await found(gender="male") == ["b"]
    assert await found(**{"gender:missing": "true"}) == ["a", "c"]
    assert await found(("Observation",), subject="Patient/a") == ["o1"]
    assert await found(("Observation",), **{"subject.name": "ang"}) == ["o1"]
    assert await found(**{"_has:Observation:subject:code": "8867-4"}) == ["a"]
    assert await found(("Observation",), **{"code-value-quantity": "http://loinc.org|8867-4$gt70"}) == ["o1"]
    assert await found(("Observation",), **{"value-quantity": "le79"}) == []
    ordered = await store.search(query(("Patient",), _sort="-birthdate"))
    assert [k.id for k in ordered.keys] == ["c", "b", "a"]


async def test_updates_replace_index_rows(engine: Engine) -> None:
    """An update's index is the new version's alone, whether its rows were kept, dropped, added or repeated."""
    store = await engine.tenant("alpha")
    first = patient("u", family="Kept", gender="female", identifier=[{"system": "s", "value": "1"}])
    await put(engine, "alpha", first, 1)
    twice = [{"system": "s", "value": "2"}, {"system": "s", "value": "2"}, {"system": "s", "value": "3"}]
    await put(engine, "alpha", {**patient("u", family="Kept"), "identifier": twice}, 2)

    async def found(**params: str) -> list[str]:
        return sorted(k.id for k in (await store.search(query(("Patient",), **params))).keys)

    assert await found(family="kept") == ["u"]
    assert await found(gender="female") == []
    assert await found(identifier="s|1") == []
    assert await found(identifier="s|2") == ["u"]
    await put(engine, "alpha", {**patient("u", family="Kept"), "identifier": twice[1:]}, 3)
    assert await found(identifier="s|2") == ["u"] and await found(identifier="s|3") == ["u"]
    async with store.transaction() as tx:
        await tx.write(ResourceVersion("Patient", "u", 4, "2026-01-01T00:00:04.000+00:00", None, "DELETE"), None)
    assert await found(family="kept") == [] and await found(identifier="s|2") == []


async def test_paging_snapshot(engine: Engine) -> None:
    store = await engine.tenant("alpha")
    for n in range(5):
        await put(engine, "alpha", patient(f"p{n}"))
    first = await store.search(query(("Patient",), _count="2"))
    assert first.total == 5
    await put(engine, "alpha", patient("late"))
    second = await store.search(query(("Patient",), _count="2", _offset="2", _snapshot=str(first.snapshot)))
    assert second.total == 5
    rest = await store.search(query(("Patient",), _count="10", _offset="4", _snapshot=str(first.snapshot)))
    assert len({*first.keys, *second.keys, *rest.keys}) == 5
    assert ResourceKey("Patient", "late") not in rest.keys


async def test_outbox_leases_and_redelivery(engine: Engine) -> None:
    store = await engine.tenant("alpha")
    await put(engine, "alpha", patient("e1"))
    await put(engine, "alpha", patient("e2"))
    claimed = await store.claim_events("worker", 10, lease_seconds=0.2)
    assert [e.payload["id"] for e in claimed] == ["e1", "e2"]
    assert await store.claim_events("worker", 10, 30) == []  # leased
    other = await store.claim_events("audit", 10, 30)  # every consumer gets every event
    assert len(other) == 2
    await store.ack_event("worker", claimed[0].seq)
    await asyncio.sleep(0.3)
    again = await store.claim_events("worker", 10, 30)
    assert [e.payload["id"] for e in again] == ["e2"]
    assert again[0].attempts == 2
    await store.ack_event("worker", again[0].seq)
    await put(engine, "alpha", patient("e3"))
    assert [e.payload["id"] for e in await store.claim_events("worker", 10, 30)] == ["e3"]
    await put(engine, "alpha", patient("e4"))
    late = await store.claim_events("later", 10, lease_seconds=0.05)
    await store.defer_event("later", late[0].seq, 0.5)  # a retry's back-off outlasts the lease
    await asyncio.sleep(0.2)
    assert [e.payload["id"] for e in await store.claim_events("later", 10, 30)] == [e.payload["id"] for e in late[1:]]
    await store.ack_events("audit", [e.seq for e in other])  # several at once
    await store.ack_events("audit", [])
    assert [e.payload["id"] for e in await store.claim_events("audit", 10, 30)] == ["e3", "e4"]


async def test_concurrent_transactions_lose_nothing(engine: Engine) -> None:
    store = await engine.tenant("alpha")
    await put(engine, "alpha", {"resourceType": "Basic", "id": "counter", "code": {"text": "0"}})

    async def increment() -> None:
        async with store.transaction() as tx:
            current = await tx.read("Basic", "counter")
            assert current is not None and current.content is not None
            body = orjson.loads(current.content)
            body["code"]["text"] = str(int(body["code"]["text"]) + 1)
            await tx.write(version(body, current.version + 1), None)

    async def create(n: int) -> None:
        await put(engine, "alpha", patient(f"c{n}"))

    await asyncio.gather(*(increment() for _ in range(20)), *(create(n) for n in range(20)))
    counter = await store.read("Basic", "counter")
    assert counter is not None and counter.version == 21
    assert orjson.loads(counter.content or b"")["code"]["text"] == "20"
    assert (await store.search(query(("Patient",), _count="0"))).total == 20


async def test_committed_data_survives_reopen(engine_factory: Callable[[], Engine]) -> None:
    first = engine_factory()
    await first.open()
    await first.create_tenant("alpha")
    await put(first, "alpha", patient("durable"))
    await first.close()
    second = engine_factory()
    await second.open()
    try:
        store = await second.tenant("alpha")
        assert await store.read("Patient", "durable") is not None
    finally:
        await second.close()


async def test_a_failing_write_does_not_sink_concurrent_ones(engine: Engine) -> None:
    store = await engine.tenant("alpha")

    async def write(resource: dict) -> None:
        async with store.transaction() as tx:
            await tx.write(version(resource), index_resource(resource))
            await tx.append_event("resource.created", {"id": resource["id"]})

    results = await asyncio.gather(
        *(write(patient(f"g{n}")) for n in range(10)),
        write(patient("twice")),
        write(patient("twice")),  # the same version of the same resource: exactly one must fail
        return_exceptions=True,
    )
    failures = [r for r in results if isinstance(r, BaseException)]
    assert len(failures) == 1
    assert (await store.search(query(("Patient",), _count="0"))).total == 11
    events = await store.claim_events("c", 100, 30)
    assert sorted(e.payload["id"] for e in events) == sorted([f"g{n}" for n in range(10)] + ["twice"])


async def test_records_with_indexed_fields(engine: Engine) -> None:
    from fhir_server.storage.port import Record
    from fhir_server.storage.query import FieldMatch, RecordQuery

    store = await engine.tenant("alpha")
    rows = [
        ("1.2.1", {"name": ("doe^jane",), "date": ("20240105",), "modality": ("XC", "SM")}),
        ("1.2.2", {"name": ("doe^john",), "date": ("20240210",), "modality": ("XC",)}),
        ("1.2.3", {"name": ("roe^[x]",), "date": ("20230101",), "modality": ("OT",)}),
    ]
    async with store.transaction() as tx:
        for key, fields in rows:
            await tx.put_record(Record("study", key, key.encode(), fields))
        await tx.put_record(Record("other", "1.2.1", b"elsewhere", {"name": ("doe^jane",)}))

    async def keys(*where: FieldMatch) -> list[str]:
        return [r.key for r in await store.find_records(RecordQuery("study", tuple(where)))]

    assert await keys() == ["1.2.1", "1.2.2", "1.2.3"]
    assert await keys(FieldMatch("name", "glob", ("doe^j*",))) == ["1.2.1", "1.2.2"]
    assert await keys(FieldMatch("name", "glob", ("doe^jan?",))) == ["1.2.1"]
    assert await keys(FieldMatch("name", "glob", ("roe^[x]",))) == ["1.2.3"]
    assert await keys(FieldMatch("date", "range", ("20240101", ""))) == ["1.2.1", "1.2.2"]
    assert await keys(FieldMatch("date", "range", ("", "20240131"))) == ["1.2.1", "1.2.3"]
    assert await keys(FieldMatch("modality", "eq", ("SM",))) == ["1.2.1"]
    assert await keys(FieldMatch("modality", "in", ("OT", "SM"))) == ["1.2.1", "1.2.3"]
    assert await keys(FieldMatch("modality", "eq", ("XC",)), FieldMatch("date", "range", ("20240201", ""))) == ["1.2.2"]
    found = await store.get_record("study", "1.2.1")
    assert found is not None and found.body == b"1.2.1" and set(found.fields["modality"]) == {"XC", "SM"}
    async with store.transaction() as tx:
        await tx.put_record(Record("study", "1.2.1", b"new", {"name": ("changed",), "modality": ("SM", "XC")}))
        await tx.delete_record("study", "1.2.2")
    assert await keys(FieldMatch("name", "glob", ("doe*",))) == []
    assert await keys(FieldMatch("name", "eq", ("changed",))) == ["1.2.1"]
    assert await keys(FieldMatch("modality", "eq", ("XC",))) == ["1.2.1"]
    assert await keys(FieldMatch("date", "range", ("20240101", ""))) == []
    assert await keys() == ["1.2.1", "1.2.3"]
    beta = await engine.tenant("beta")
    assert await beta.find_records(RecordQuery("study")) == []
    page = await store.find_records(RecordQuery("study", limit=1, after_key="1.2.1"))
    assert [r.key for r in page] == ["1.2.3"]  # keyset paging (storage copy): keys after the given one
    assert await store.find_records(RecordQuery("study", after_key="1.2.3")) == []


def _audit_event(n: int) -> tuple[dict[str, Any], AuditEntry]:
    instant = "2026-01-01T00:00:00.000+00:00"
    meta = {"versionId": "1", "lastUpdated": instant}
    body = {"resourceType": "AuditEvent", "id": f"ae{n}", "meta": meta, "type": {"code": "rest"}, "recorded": instant,
            "outcome": str(n * 4), "agent": [], "source": {}}  # fmt: skip
    content = orjson.dumps(body)
    return body, AuditEntry(0, f"ae{n}", instant, content, hashlib.sha256(content).hexdigest())


def _indexer(events: list[tuple[dict[str, Any], AuditEntry]], unreadable: str = "ae2") -> AuditIndexer:
    """Index rows from each event's body; ``unreadable`` gets None (kept chained but unindexed)."""
    bodies = {body["id"]: body for body, _ in events}

    async def index(entry: AuditEntry) -> IndexEntries | None:
        assert entry.content is not None and orjson.loads(entry.content)["id"] == entry.resource_id
        return None if entry.resource_id == unreadable else index_resource(bodies[entry.resource_id])

    return index


async def test_recorded_audit_events_are_settled_chained_and_indexed(engine: Engine) -> None:
    store = await engine.tenant("alpha")
    events = [_audit_event(n) for n in range(3)]
    for _, entry in events:
        await store.append_audit(entry)
    assert await store.settle_audit(_indexer(events), 2) <= 3
    assert await store.settle_audit(_indexer(events), 2) == 0  # settled once, whoever asks again
    stored = await store.read("AuditEvent", "ae1")
    assert stored is not None and orjson.loads(stored.content or b"{}")["outcome"] == "4"
    assert [link.resource_id for link in await store.audit_links(0, 10)] == ["ae0", "ae1", "ae2"]
    assert [link.resource_id for link in await store.audit_links(1, 10)] == ["ae1", "ae2"]
    assert [k.id for k in (await store.search(query(("AuditEvent",), outcome="4"))).keys] == ["ae1"]
    assert (await store.search(query(("AuditEvent",), outcome="8"))).keys == []  # unreadable: not indexed
    assert await store.staged_audit(0, 10) == []
    staging = await store.audit_staging()
    assert staging.loaded_seq == staging.staged_seq  # the intake holds nothing more
    assert await (await engine.tenant("beta")).audit_links(0, 10) == []


async def test_audit_events_written_in_a_transaction_are_chained_at_once(engine: Engine) -> None:
    store = await engine.tenant("alpha")
    events = [_audit_event(n) for n in range(3)]
    async with store.transaction() as tx:
        for _, entry in events:
            await tx.append_audit(entry)
    stored = await store.read("AuditEvent", "ae1")
    assert stored is not None and orjson.loads(stored.content or b"{}")["outcome"] == "4"
    assert [link.resource_id for link in await store.audit_links(0, 10)] == ["ae0", "ae1", "ae2"]
    await store.settle_audit(_indexer(events), 2)
    assert await store.settle_audit(_indexer(events), 2) == 0  # the unreadable one stays unindexed
    assert [k.id for k in (await store.search(query(("AuditEvent",), outcome="4"))).keys] == ["ae1"]
    assert (await store.search(query(("AuditEvent",), outcome="8"))).keys == []
    assert await (await engine.tenant("beta")).audit_links(0, 10) == []


def test_a_sqlite_transaction_refuses_use_after_it_ended(tmp_path: Path) -> None:
    """A write buffered after the commit used to be dropped silently; now it raises."""
    from fhir_server.storage.sqlite.engine import SqliteEngine

    async def scenario() -> None:
        engine = SqliteEngine(tmp_path)
        await engine.open()
        await engine.create_tenant("default")
        store = await engine.tenant("default")
        async with store.transaction() as tx:
            await tx.append_event("test.topic", {"n": 1})
        with pytest.raises(RuntimeError, match="has ended"):
            await tx.append_event("test.topic", {"n": 2})
        with pytest.raises(RuntimeError, match="has ended"):
            await tx.get_record("c", "k")
        await engine.close()

    asyncio.run(scenario())


async def test_over_long_values_are_stored_and_found_by_their_whole_value(engine: Engine) -> None:
    """A value past PostgreSQL's btree row limit (about 2,700 bytes) stores on both engines, and a search by the
    whole value finds exactly its resource (fhir_server/storage/index_keys.py)."""
    store = await engine.tenant("alpha")
    long_id = hashlib.sha512(b"seed").hexdigest() * 47  # 3,008 incompressible characters
    twin_id = long_id[:-1] + ("0" if long_id[-1] != "0" else "1")  # the same head, another value
    cjk = "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(1024))  # 3,072 UTF-8 bytes
    long_uri = "http://example.org/" + long_id
    ligature = "\ufdfa" * 200  # NFKD: 18 characters each
    await put(engine, "alpha", patient("long", family=cjk, identifier=[{"system": long_uri, "value": long_id}]))
    await put(engine, "alpha", patient("twin", family=ligature, identifier=[{"value": twin_id}]))
    vs = {"resourceType": "ValueSet", "id": "vs", "status": "draft", "url": long_uri}
    await put(engine, "alpha", vs)

    async def found(types: tuple[str, ...] = ("Patient",), **params: str) -> list[str]:
        return sorted(k.id for k in (await store.search(query(types, **params))).keys)

    assert await found(identifier=long_id) == ["long"]
    assert await found(identifier=twin_id) == ["twin"]
    assert await found(identifier=f"{long_uri}|{long_id}") == ["long"]
    assert await found(family=cjk) == ["long"]
    assert await found(family=cjk[:10]) == ["long"]
    assert await found(("ValueSet",), url=long_uri) == ["vs"]
    assert await found(("ValueSet",), **{"url:below": "http://example.org/"}) == ["vs"]
