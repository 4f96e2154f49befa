"""The PostgreSQL engine's answers to ``storage.probes`` (``/readyz``, ``/metrics``): counts and ages, no content."""

from __future__ import annotations

import asyncpg

from fhir_server.storage.postgres.schema import CONTROL_SCHEMA, SCHEMA_VERSION
from fhir_server.storage.probes import Backlog, PoolUsage

COUNTED = 10_000  # outbox rows one consumer's count reads at most per scrape

# Per consumer, three index probes from its cursor (acked_through) instead of an anti-join over every pending row:
# - near: the outbox primary key read from the cursor, at most COUNTED entries (LIMIT);
# - done: its acked delivery rows past the cursor, a range of outbox_delivery's primary key (consumer, seq):
#   the claim window, which acks shrink as the cursor moves;
# - first_at: the first event past the cursor it has not acked, walking the primary key and stopping there:
#   it passes at most ``done`` rows.
# So a scrape reads O(COUNTED + window) rows per consumer whatever the backlog. Past COUNTED pending rows the
# count is ``last - cursor - done``: identity gaps (rolled-back inserts) make it an upper estimate there.
_BACKLOG = """
SELECT c.consumer, c.acked,
  (SELECT count(*) FROM (SELECT 1 FROM {s}.outbox o WHERE o.seq > c.acked ORDER BY o.seq LIMIT $1) w) AS near,
  (SELECT max(seq) FROM {s}.outbox) AS last,
  (SELECT count(*) FROM {s}.outbox_delivery d WHERE d.consumer = c.consumer AND d.seq > c.acked AND d.acked) AS done,
  (SELECT o.created_at FROM {s}.outbox o WHERE o.seq > c.acked AND NOT EXISTS (
       SELECT 1 FROM {s}.outbox_delivery d WHERE d.consumer = c.consumer AND d.seq = o.seq AND d.acked)
   ORDER BY o.seq LIMIT 1) AS first_at,
  now() AS at
FROM (SELECT u.consumer,
             COALESCE((SELECT k.acked_through FROM {s}.outbox_cursor k WHERE k.consumer = u.consumer), 0) AS acked
      FROM (SELECT consumer FROM {s}.outbox_cursor UNION SELECT DISTINCT consumer FROM {s}.outbox_delivery) u) c
ORDER BY c.consumer
"""


def backlog_sql(tenant_schema: str) -> str:
    """The probe's statement over a tenant's (quoted) schema; ``$1`` is ``COUNTED``."""
    return _BACKLOG.format(s=tenant_schema)


async def outbox_backlog(conn: asyncpg.Connection, tenant_schema: str) -> list[Backlog]:
    """Per consumer of the tenant (its quoted schema): events past its cursor it has not acknowledged."""
    backlogs = []
    for row in await conn.fetch(backlog_sql(tenant_schema), COUNTED):
        near, done = int(row["near"]), int(row["done"])
        pending = near - done if near < COUNTED else int(row["last"]) - int(row["acked"]) - done
        age = (row["at"] - row["first_at"]).total_seconds() if row["first_at"] is not None else 0.0
        backlogs.append(Backlog(row["consumer"], max(0, pending), max(0.0, age)))
    return backlogs


async def schema_current(conn: asyncpg.Connection, tenant: str) -> bool:
    version = await conn.fetchval(f"SELECT schema_version FROM {CONTROL_SCHEMA}.tenant WHERE name = $1", tenant)
    return version == SCHEMA_VERSION


def pool_usage(pools: list[asyncpg.Pool]) -> PoolUsage:
    """Connections open in ``pools`` and, of those, checked out now."""
    size = sum(pool.get_size() for pool in pools)
    return PoolUsage(size, size - sum(pool.get_idle_size() for pool in pools))
