"""A scrape of /metrics in a process that serves no traffic opens no tenant pools (dermbridge/metrics.py)."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from dermbridge.metrics import OUTBOX_PENDING, Sampler
from fhir_server.search.extract import index_resource
from fhir_server.storage.port import ResourceVersion
from fhir_server.storage.postgres import PostgresEngine
from tests.postgres import ThrowawayPostgres

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_scrape_reads_every_tenant_over_the_control_pool(postgres_server: ThrowawayPostgres) -> None:
    dsn = postgres_server.create_database()
    api, audit_role = PostgresEngine(dsn, pool_size=2), PostgresEngine(dsn, pool_size=2)
    await asyncio.gather(api.open(), audit_role.open())
    try:
        for tenant in ("clinic-a", "clinic-b"):
            await api.create_tenant(tenant)
            store = await api.tenant(tenant)
            resource = {"resourceType": "Patient", "id": "p1"}
            async with store.transaction() as tx:
                await tx.write(ResourceVersion("Patient", "p1", 1, "2026-01-01T00:00:00.000+00:00",
                                               orjson.dumps(resource), "PUT"), index_resource(resource))  # fmt: skip
                await tx.append_event("resource.created", {"id": "p1"})
            await store.claim_events("metrics-test", 1, lease_seconds=600)
        await Sampler(audit_role).sample()
        assert OUTBOX_PENDING.labels("metrics-test")._value.get() == 2  # one event in each tenant
        assert audit_role._stores == {}  # no tenant pool opened: the control pool answered
        assert audit_role.pool_usage().size <= 2
    finally:
        await asyncio.gather(api.close(), audit_role.close())
