"""Settling AuditEvents in batches, the same in every engine: read a page, index it, write it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from fhir_server.storage.port import AuditEntry, AuditIndexer, IndexEntries

Source = Callable[[int, int], Awaitable[list[AuditEntry]]]
Sink = Callable[[Sequence[tuple[int, IndexEntries | None]]], Awaitable[int]]


async def drain(source: Source, sink: Sink, indexer: AuditIndexer, batch: int) -> int:
    """Every entry of ``source``, ``batch`` at a time, given its index rows and handed to ``sink``."""
    done, after = 0, 0
    while entries := await source(after, batch):
        after = entries[-1].seq
        done += await sink([(entry.seq, await indexer(entry)) for entry in entries])
    return done
