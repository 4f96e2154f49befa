"""The retention job's lease and policies on a real SQLite tenant store (no HTTP)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dermbridge.cli_support import opened_engine
from dermbridge.settings import Settings
from fhir_server.repository import Repository
from fhir_server.retention.job import RetentionJob
from fhir_server.retention.policies import PolicyError, RetentionPolicy, list_policies, remove_policy, set_policy
from fhir_server.storage.port import TenantStore
from tests.factories import observation

pytestmark = pytest.mark.anyio
LATER = datetime.now(UTC) + timedelta(days=40)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[TenantStore]:
    """The tenant store the server and the CLI would open on this data directory (encrypted SQLite)."""
    async with opened_engine(Settings(data_dir=tmp_path / "var")) as engine:
        await engine.create_tenant("alpha")
        yield await engine.tenant("alpha")


async def observations(store: TenantStore, n: int) -> list[str]:
    repo = Repository.system(store, reason="test data")
    return [
        str((await repo.create(observation("Patient/p1"), resource_type="Observation")).resource["id"])
        for _ in range(n)
    ]


async def test_a_run_does_nothing_while_another_holds_the_lease(store: TenantStore) -> None:
    await set_policy(store, RetentionPolicy("Observation", 30))
    ids = await observations(store, 3)
    other = RetentionJob(None)
    assert await other._claim(store, "another process")
    held = await RetentionJob(None).run(store, now=LATER)
    assert not held.claimed and held.deleted == []
    for id in ids:
        current = await store.read("Observation", id)
        assert current is not None and not current.deleted
    await other._release(store, "another process")
    done = await RetentionJob(None).run(store, now=LATER)
    assert done.claimed and sorted(done.deleted) == sorted(f"Observation/{id}" for id in ids)


async def test_an_expired_lease_is_taken_over(store: TenantStore) -> None:
    await set_policy(store, RetentionPolicy("Observation", 30))
    await observations(store, 1)
    assert await RetentionJob(None, lease_seconds=-1)._claim(store, "a crashed run")  # expired as soon as taken
    assert (await RetentionJob(None).run(store, now=LATER)).counts["deleted"] == 1


async def test_policies_are_kept_per_type_and_checked(store: TenantStore) -> None:
    await set_policy(store, RetentionPolicy("Observation", 30))
    await set_policy(store, RetentionPolicy("Observation", 90))
    await set_policy(store, RetentionPolicy("Media", 10))
    assert await list_policies(store) == [RetentionPolicy("Media", 10), RetentionPolicy("Observation", 90)]
    await remove_policy(store, "Media")
    assert await list_policies(store) == [RetentionPolicy("Observation", 90)]
    for bad in (("Nonsense", 30), ("AuditEvent", 30), ("Flag", 30), ("Observation", 0)):
        with pytest.raises(PolicyError):
            RetentionPolicy(*bad)
