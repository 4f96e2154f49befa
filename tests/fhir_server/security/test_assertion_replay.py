"""A client assertion is single use across every process of the server (RFC 7523 §3 item 7): its ``jti``
is kept in the tenant database, not in one process (``fhir_server.security.assertion_ids``)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from fhir_server.security.assertion_ids import COLLECTION, AssertionIds
from fhir_server.storage.query import RecordQuery
from fhir_server.storage.sqlite import SqliteEngine
from tests.conftest import make_client
from tests.fhir_server.security.test_tokens import assertion, backend_request, ec_key, new_client


def test_an_assertion_used_at_one_api_process_is_refused_at_another(tmp_path: Path) -> None:
    data = tmp_path / "var"
    with make_client(data, roles=()) as first, make_client(data, roles=()) as second:  # two engines, one database
        private, jwks = ec_key()
        client, _ = new_client(first, ("integration",), secret=False, jwks=jwks)
        token = assertion(client.client_id, private)
        assert backend_request(first, token).status_code == 200
        replayed = backend_request(second, token)
        assert replayed.status_code == 401 and "already used" in replayed.json()["error_description"]
        assert backend_request(second, assertion(client.client_id, private)).status_code == 200  # a fresh jti


def test_two_engines_racing_on_one_jti_let_exactly_one_through(tmp_path: Path) -> None:
    async def race() -> list[bool]:
        engines = [SqliteEngine(tmp_path), SqliteEngine(tmp_path)]
        for engine in engines:
            await engine.open()
        await engines[0].create_tenant("default")
        expires = time.time() + 120
        try:
            uses = [AssertionIds(engines[i % 2]).first_use("default", "default.c", "jti-1", expires) for i in range(8)]
            return list(await asyncio.gather(*uses))
        finally:
            for engine in engines:
                await engine.close()

    assert sorted(asyncio.run(race())) == [False] * 7 + [True]


def test_expired_ids_are_pruned_and_may_be_used_again(tmp_path: Path) -> None:
    async def run() -> tuple[bool, bool, list[str]]:
        engine = SqliteEngine(tmp_path)
        await engine.open()
        await engine.create_tenant("default")
        ids = AssertionIds(engine)
        try:
            past = time.time() - 1
            assert await ids.first_use("default", "default.c", "old", past)
            again = await ids.first_use("default", "default.c", "old", time.time() + 60)  # it had expired
            other = await ids.first_use("default", "default.c", "new", time.time() + 60)
            store = await engine.tenant("default")
            kept = [r.key for r in await store.find_records(RecordQuery(COLLECTION))]
            return again, other, sorted(kept)
        finally:
            await engine.close()

    again, other, kept = asyncio.run(run())
    assert again and other
    assert kept == ["default.c new", "default.c old"]  # the expired "old" was replaced by its new use
