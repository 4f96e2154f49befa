"""The outbox of one tenant schema: events appended in the writer's transaction, claimed with leases.

Appends take the tenant's outbox lock (a transaction-scoped advisory lock) just before the commit, so
events become visible in ``seq`` order: a consumer's acknowledged-through cursor never passes an
event that commits later with a smaller seq. The commit's ``pg_notify`` wakes every process's
listeners (LISTEN/NOTIFY: delivered only if the transaction commits). Claims lock the events they
lease ``FOR UPDATE SKIP LOCKED``: two workers of one consumer never lease the same event. Leases use
the database's clock, shared by every node.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import asyncpg

from fhir_server.storage.port import OutboxEvent
from fhir_server.storage.postgres.schema import xact_lock

NOTIFY_CHANNEL = "dermbridge_outbox"
_NOW = "extract(epoch FROM clock_timestamp())"


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


async def _acked_through(conn: asyncpg.Connection, consumer: str) -> int:
    value = await conn.fetchval("SELECT acked_through FROM outbox_cursor WHERE consumer = $1", consumer)
    return int(value or 0)


async def claim(conn: asyncpg.Connection, consumer: str, limit: int, lease_seconds: float) -> list[OutboxEvent]:
    async with conn.transaction():
        rows = await conn.fetch(
            "SELECT o.seq, o.topic, o.payload, COALESCE(d.attempts, 0) AS attempts FROM outbox o "
            "LEFT JOIN outbox_delivery d ON d.consumer = $1 AND d.seq = o.seq "
            f"WHERE o.seq > $2 AND (d.seq IS NULL OR (NOT d.acked AND d.lease_until < {_NOW})) "
            "ORDER BY o.seq LIMIT $3 FOR UPDATE OF o SKIP LOCKED",
            consumer,
            await _acked_through(conn, consumer),
            limit,
        )
        if rows:
            await conn.execute(
                "INSERT INTO outbox_delivery (consumer, seq, lease_until, attempts) "
                f"SELECT $1, s, {_NOW} + $3, 1 FROM unnest($2::int8[]) AS s "
                "ON CONFLICT (consumer, seq) DO UPDATE SET lease_until = excluded.lease_until, "
                "attempts = outbox_delivery.attempts + 1",
                consumer,
                [row["seq"] for row in rows],
                lease_seconds,
            )
    return [OutboxEvent(row["seq"], row["topic"], json.loads(row["payload"]), row["attempts"] + 1) for row in rows]


async def defer(conn: asyncpg.Connection, consumer: str, seq: int, seconds: float) -> None:
    await conn.execute(
        f"UPDATE outbox_delivery SET lease_until = {_NOW} + $3 WHERE consumer = $1 AND seq = $2 AND NOT acked",
        consumer,
        seq,
        seconds,
    )


async def ack(conn: asyncpg.Connection, consumer: str, seqs: Sequence[int]) -> None:
    """Mark the events acknowledged, then move the consumer's cursor past every acknowledged prefix."""
    async with conn.transaction():
        await conn.execute(
            "UPDATE outbox_delivery SET acked = true WHERE consumer = $1 AND seq = ANY($2::int8[])",
            consumer,
            list(seqs),
        )
        through = await _acked_through(conn, consumer)
        row = await conn.fetchrow(  # one statement, one snapshot: no event committed in between is passed
            "SELECT (SELECT MIN(o.seq) FROM outbox o LEFT JOIN outbox_delivery d ON d.consumer = $1 AND d.seq = o.seq "
            "WHERE o.seq > $2 AND NOT COALESCE(d.acked, false)) AS first_open, "
            "(SELECT COALESCE(MAX(seq), 0) FROM outbox) AS last",
            consumer,
            through,
        )
        new_through = int(row["last"]) if row["first_open"] is None else int(row["first_open"]) - 1
        if new_through > through:
            await conn.execute(
                "INSERT INTO outbox_cursor (consumer, acked_through) VALUES ($1, $2) ON CONFLICT (consumer) "
                "DO UPDATE SET acked_through = GREATEST(outbox_cursor.acked_through, excluded.acked_through)",
                consumer,
                new_through,
            )
            await conn.execute("DELETE FROM outbox_delivery WHERE consumer = $1 AND seq <= $2", consumer, new_through)
