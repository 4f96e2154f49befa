"""Settling an audit intake (``AuditLog.settle_audit``) for engines that keep one: the entries of a source
(the intake, or chained events without index rows), a batch at a time, given their index rows by the
caller's indexer and handed to a sink that stores, chains or indexes them in one transaction."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from fhir_server.storage.port import AuditEntry, AuditIndexer, IndexEntries

AuditSource = Callable[[int, int], Awaitable[list[AuditEntry]]]  # (after seq, limit) -> entries in seq order
AuditSink = Callable[[Sequence[tuple[int, IndexEntries | None]]], Awaitable[int]]  # -> how many it took


async def drain(source: AuditSource, sink: AuditSink, indexer: AuditIndexer, batch: int) -> int:
    """Every entry of ``source``, ``batch`` at a time, given its index rows and handed to ``sink``."""
    done, after = 0, 0
    while entries := await source(after, batch):
        after = entries[-1].seq
        done += await sink([(entry.seq, await indexer(entry)) for entry in entries])
    return done
