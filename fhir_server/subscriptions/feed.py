"""The websocket feed: how a match found by the subscription worker reaches the API process that
holds the client's socket (R4 subscription.html, channel "websocket").

The worker may run in another process than the socket, so it does not send: it records one entry
per (Subscription, outbox event) in the tenant's database (``FEED``, keyed by Subscription id and the
zero-padded event sequence, so entries of one Subscription sort in commit order). Each process holding
bound sockets reads the entries after the last one it delivered on that binding (at least once; the
same key written twice is one entry), woken at once when the worker shares its process and every
``poll_seconds`` otherwise. An entry carries no clinical content: R4 websocket notifications are
``ping {id}``, after which the client searches with its own token.

Only the latest ``KEEP`` entries of a Subscription are kept: a socket that fell further behind has
missed pings, which carry no content, so the next one makes it search again anyway.
"""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from fhir_server.storage.port import Record, TenantReader, TenantTransaction
from fhir_server.storage.query import FieldMatch, RecordQuery

FEED = "subscription-websocket-feed"
KEEP = 100
SEQ_DIGITS = 20


def _seq_text(seq: int) -> str:
    return f"{seq:0{SEQ_DIGITS}d}"


def _of(subscription_id: str) -> FieldMatch:
    return FieldMatch("subscription", "eq", (subscription_id,))


async def publish(tx: TenantTransaction, subscription_id: str, seq: int, about: str) -> None:
    """Record that outbox event ``seq`` matched the Subscription (``about``: the reference, for audit)."""
    body = orjson.dumps({"about": about, "recorded": datetime.now(UTC).isoformat(timespec="milliseconds")})
    fields: dict[str, tuple[str, ...]] = {"subscription": (subscription_id,), "seq": (_seq_text(seq),)}
    await tx.put_record(Record(FEED, f"{subscription_id}|{_seq_text(seq)}", body, fields))
    kept = await tx.find_records(RecordQuery(FEED, (_of(subscription_id),), limit=KEEP + 16))
    for old in kept[: max(0, len(kept) - KEEP)]:  # a read in a transaction sees its own writes
        await tx.delete_record(FEED, old.key)


async def after(reader: TenantReader, subscription_id: str, seq: int, limit: int = KEEP) -> list[tuple[int, str]]:
    """The entries of the Subscription after event ``seq``, oldest first: (event seq, about)."""
    where = (_of(subscription_id), FieldMatch("seq", "range", (_seq_text(seq + 1), "")))
    found = await reader.find_records(RecordQuery(FEED, where, limit=limit))
    return [(_seq_of(record), str(orjson.loads(record.body).get("about", ""))) for record in found]


async def latest(reader: TenantReader, subscription_id: str) -> int:
    """The event sequence of the Subscription's newest entry (0: none); a binding starts after it."""
    found = await reader.find_records(RecordQuery(FEED, (_of(subscription_id),), limit=KEEP + 16))
    return _seq_of(found[-1]) if found else 0


def _seq_of(record: Record) -> int:
    return int(record.key.rpartition("|")[2])
