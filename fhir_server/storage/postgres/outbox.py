"""The outbox of one tenant schema: events appended in the writer's transaction, claimed with leases.

Appends take the tenant's outbox lock (a transaction-scoped advisory lock) just before the commit, so
events become visible in ``seq`` order. Each consumer has a delivery row per event: new events get
theirs in one short step under the consumer's cursor row (``_materialise``: safe because of that
order), which also drops the rows of the acknowledged prefix; a claim leases open delivery rows
``FOR UPDATE SKIP LOCKED``, so workers of one consumer in any number of processes never lease the same
event and never wait for each other; an acknowledgement marks rows, in one statement.
Leases and acknowledgements commit without waiting for the WAL flush (the store's outbox pool has
``synchronous_commit = off``), as in the SQLite engine: a crash can only undo one, and that redelivers
an event, which every consumer handles (at-least-once). The events themselves commit durably.
The commit's ``pg_notify`` wakes every process's listeners (LISTEN/NOTIFY: sent only if the
transaction commits). Leases use the database's clock, shared by every node.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import asyncpg

from fhir_server.storage.port import OutboxEvent
from fhir_server.storage.postgres.schema import xact_lock

NOTIFY_CHANNEL = "dermbridge_outbox"
MATERIALISE_BATCH = 10_000
# now(): the start of the statement's transaction, each claim and deferral being one statement of its own; a
# STABLE function, which Citus evaluates once on the coordinator (it refuses VOLATILE ones, clock_timestamp(), in
# an UPDATE of a distributed table)
_NOW = "extract(epoch FROM now())"


async def append_events(conn: asyncpg.Connection, tenant: str, events: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """Append events in the caller's transaction, in order, and wake listeners when it commits."""
    await xact_lock(conn, f"{tenant}:outbox")
    await conn.execute(
        "INSERT INTO outbox (topic, payload) "
        "SELECT t, p FROM unnest($1::text[], $2::jsonb[]) WITH ORDINALITY AS e(t, p, n) ORDER BY n",
        [topic for topic, _ in events],
        [json.dumps(payload, separators=(",", ":")) for _, payload in events],
    )
    await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, tenant)


async def _materialise(conn: asyncpg.Connection, consumer: str) -> None:
    """Delivery rows for the events committed since the consumer's last step (when there are any), and
    the rows of the acknowledged prefix dropped (the cursor moves past it). Two statements in one
    transaction (profiled: five round trips before, on every claim after a commit):

    - the cursor row is upserted, which locks it (concurrent steps of the consumer, in any process, wait
      here) and returns its newest version, and the delivery rows after it are added, in one statement;
    - the acknowledged prefix (at or below the cursor's previous ``materialised_through``: the rows just
      added are above it) is found, its rows deleted and the cursor moved, in one statement: one snapshot,
      so the rows it deletes are the ones it saw acknowledged."""
    behind = await conn.fetchval(
        "SELECT COALESCE((SELECT MAX(seq) FROM outbox), 0) > "
        "COALESCE((SELECT materialised_through FROM outbox_cursor WHERE consumer = $1), 0)",
        consumer,
    )
    if not behind:
        return
    async with conn.transaction():
        step = await conn.fetchrow(
            "WITH cur AS (INSERT INTO outbox_cursor (consumer, acked_through, materialised_through) "
            "VALUES ($1, 0, 0) ON CONFLICT (consumer) DO UPDATE SET consumer = excluded.consumer "
            "RETURNING acked_through, materialised_through), "
            "added AS (INSERT INTO outbox_delivery (consumer, seq, lease_until, attempts) "
            "SELECT $1, o.seq, 0, 0 FROM outbox o, cur c WHERE o.seq > c.materialised_through "
            "ORDER BY o.seq LIMIT $2 RETURNING seq) "
            "SELECT c.acked_through, c.materialised_through, (SELECT MAX(seq) FROM added) AS added FROM cur c",
            consumer,
            MATERIALISE_BATCH,
        )
        previous = step["materialised_through"]
        materialised = previous if step["added"] is None else int(step["added"])
        await conn.execute(
            "WITH bound AS (SELECT COALESCE(MIN(seq) - 1, $3) AS seq FROM outbox_delivery "
            "WHERE consumer = $1 AND NOT acked AND seq <= $3), "
            "gone AS (DELETE FROM outbox_delivery WHERE consumer = $1 AND seq > $4 "
            "AND seq <= (SELECT seq FROM bound)) "
            "UPDATE outbox_cursor SET materialised_through = $2, "
            "acked_through = GREATEST(acked_through, (SELECT seq FROM bound)) WHERE consumer = $1",
            consumer,
            materialised,
            previous,
            step["acked_through"],
        )


async def claim(conn: asyncpg.Connection, consumer: str, limit: int, lease_seconds: float) -> list[OutboxEvent]:
    await _materialise(conn, consumer)
    rows = await conn.fetch(
        "WITH open AS (SELECT seq FROM outbox_delivery "
        f"WHERE consumer = $1 AND NOT acked AND lease_until < {_NOW} ORDER BY seq LIMIT $2 FOR UPDATE SKIP LOCKED), "
        f"leased AS (UPDATE outbox_delivery d SET lease_until = {_NOW} + $3, attempts = d.attempts + 1 "
        "FROM open WHERE d.consumer = $1 AND d.seq = open.seq RETURNING d.seq, d.attempts) "
        "SELECT l.seq, l.attempts, o.topic, o.payload FROM leased l JOIN outbox o ON o.seq = l.seq ORDER BY l.seq",
        consumer,
        limit,
        lease_seconds,
    )
    return [OutboxEvent(row["seq"], row["topic"], json.loads(row["payload"]), row["attempts"]) for row in rows]


async def defer(conn: asyncpg.Connection, consumer: str, seq: int, seconds: float) -> None:
    await conn.execute(
        f"UPDATE outbox_delivery SET lease_until = {_NOW} + $3 WHERE consumer = $1 AND seq = $2 AND NOT acked",
        consumer,
        seq,
        seconds,
    )


async def ack(conn: asyncpg.Connection, consumer: str, seqs: Sequence[int]) -> None:
    """Mark the events acknowledged: one statement. The next ``_materialise`` moves the cursor past them."""
    await conn.execute(
        "UPDATE outbox_delivery SET acked = true WHERE consumer = $1 AND seq = ANY($2::int8[]) AND NOT acked",
        consumer,
        list(seqs),
    )
