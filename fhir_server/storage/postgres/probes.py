"""The PostgreSQL engine's answers to ``storage.probes`` (``/readyz``, ``/metrics``): counts and ages, no content."""

from __future__ import annotations

import asyncpg

from fhir_server.storage.postgres.schema import CONTROL_SCHEMA, SCHEMA_VERSION
from fhir_server.storage.probes import Backlog, PoolUsage

_BACKLOG = """
SELECT c.consumer, COUNT(o.seq) AS pending,
       COALESCE(EXTRACT(EPOCH FROM now() - MIN(o.created_at)), 0) AS oldest
FROM (SELECT consumer FROM {s}.outbox_cursor UNION SELECT DISTINCT consumer FROM {s}.outbox_delivery) c
LEFT JOIN {s}.outbox o
  ON o.seq > COALESCE((SELECT acked_through FROM {s}.outbox_cursor WHERE consumer = c.consumer), 0)
 AND NOT EXISTS (SELECT 1 FROM {s}.outbox_delivery d WHERE d.consumer = c.consumer AND d.seq = o.seq AND d.acked)
GROUP BY c.consumer ORDER BY c.consumer
"""


async def outbox_backlog(conn: asyncpg.Connection, tenant_schema: str) -> list[Backlog]:
    """Per consumer of the tenant (its quoted schema): events past its cursor it has not acknowledged."""
    rows = await conn.fetch(_BACKLOG.format(s=tenant_schema))
    return [Backlog(row["consumer"], int(row["pending"]), max(0.0, float(row["oldest"]))) for row in rows]


async def schema_current(conn: asyncpg.Connection, tenant: str) -> bool:
    version = await conn.fetchval(f"SELECT schema_version FROM {CONTROL_SCHEMA}.tenant WHERE name = $1", tenant)
    return version == SCHEMA_VERSION


def pool_usage(pools: list[asyncpg.Pool]) -> PoolUsage:
    """Connections open in ``pools`` and, of those, checked out now."""
    size = sum(pool.get_size() for pool in pools)
    return PoolUsage(size, size - sum(pool.get_idle_size() for pool in pools))
