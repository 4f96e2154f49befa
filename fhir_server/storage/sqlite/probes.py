"""The SQLite engine's answers to ``storage.probes`` (run on a reader connection)."""

from __future__ import annotations

import sqlite3
import time

from fhir_server.storage.probes import Backlog
from fhir_server.storage.sqlite.schema import SCHEMA_VERSION

_CONSUMERS = "SELECT consumer FROM outbox_cursor UNION SELECT DISTINCT consumer FROM outbox_delivery"
_PENDING = (
    "SELECT COUNT(*), MIN(o.created_ts) FROM outbox o LEFT JOIN outbox_delivery d ON d.consumer = ? AND d.seq = o.seq "
    "WHERE o.seq > COALESCE((SELECT acked_through FROM outbox_cursor WHERE consumer = ?), 0) "
    "AND COALESCE(d.acked, 0) = 0"
)


def outbox_backlog(conn: sqlite3.Connection) -> list[Backlog]:
    now = time.time()
    found = []
    for (consumer,) in conn.execute(_CONSUMERS).fetchall():
        pending, oldest = conn.execute(_PENDING, (consumer, consumer)).fetchone()
        found.append(Backlog(consumer, int(pending), max(0.0, now - oldest) if oldest is not None else 0.0))
    return found


def schema_current(conn: sqlite3.Connection) -> bool:
    return int(conn.execute("PRAGMA user_version").fetchone()[0]) == SCHEMA_VERSION
