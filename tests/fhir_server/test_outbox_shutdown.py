"""A background outbox loop stops when it is cancelled, even in the very loop iteration in which a
commit wakes it (Python 3.11's ``asyncio.wait_for`` lost that cancellation: the suite's rare stalls)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from fhir_server.outbox import OutboxLoop
from fhir_server.storage.sqlite import SqliteEngine
from fhir_server.waiting import woken

pytestmark = pytest.mark.anyio


class Rounds(OutboxLoop):
    name = "test-rounds"

    def __init__(self, engine: SqliteEngine) -> None:
        super().__init__(engine, poll_seconds=3600.0)  # only a wake-up starts a round
        self.rounds = 0
        self.waiting = asyncio.Event()

    async def drain(self) -> int:
        self.rounds += 1
        self.waiting.set()
        return 0


async def test_a_loop_cancelled_as_it_is_woken_stops(tmp_path: Path) -> None:
    engine = SqliteEngine(tmp_path / "var")
    loop = Rounds(engine)
    await loop.start()
    await asyncio.sleep(0)  # the loop now waits on its wake-up event
    task = loop._task
    assert task is not None
    loop._wake.set()  # a commit wakes it...
    task.cancel()  # ...and a shutdown cancels it, in the same iteration
    done, _ = await asyncio.wait({task}, timeout=30)
    assert task in done, "the loop carried on after its cancellation"
    assert task.cancelled()
    await loop.stop()


async def test_woken_keeps_a_cancellation_that_meets_the_event() -> None:
    event = asyncio.Event()
    waiter = asyncio.create_task(woken(event, 3600.0))
    await asyncio.sleep(0)
    event.set()
    waiter.cancel()
    done, _ = await asyncio.wait({waiter}, timeout=30)
    assert waiter in done and waiter.cancelled()


async def test_woken_answers_whether_the_event_came() -> None:
    event = asyncio.Event()
    assert await woken(event, 0.01) is False
    event.set()
    assert await woken(event, 3600.0) is True
