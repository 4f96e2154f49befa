"""In-process delivery of outbox events to consumers (at least once, with leases).

Each consumer has a name; an event is delivered to every consumer and acknowledged by each
separately. A consumer that raises leaves the event unacknowledged: it is delivered again
once its lease expires. Consumers must therefore be idempotent. An event a consumer has failed on
``max_attempts`` times is given up for that consumer (acknowledged, logged as an error with its
sequence number), so a poison event is not delivered for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from fhir_server.storage.port import Engine, OutboxEvent, TenantStore
from fhir_server.waiting import woken

log = logging.getLogger(__name__)

Consumer = Callable[[str, OutboxEvent], Awaitable[None]]


async def claimed(
    engine: Engine, consumer: str, size: int, lease_seconds: float
) -> AsyncIterator[tuple[TenantStore, list[OutboxEvent]]]:
    """The events due for ``consumer`` in every tenant, claimed ``size`` at a time until none is left."""
    for tenant in await engine.tenant_names():
        store = await engine.tenant(tenant)
        while True:
            events = await store.claim_events(consumer, size, lease_seconds)
            if not events:
                break
            yield store, events
            if len(events) < size:
                break


@dataclass(frozen=True, slots=True)
class Subscription:
    name: str
    topics: tuple[str, ...]  # prefixes, e.g. ("resource.",)
    handle: Consumer


class OutboxLoop:
    """A background task that drains outbox events: woken by the engine's commits in this process,
    and every ``poll_seconds`` otherwise (commits of other processes)."""

    name = "outbox-loop"

    def __init__(self, engine: Engine, poll_seconds: float = 1.0) -> None:
        self.poll = poll_seconds
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        engine.add_commit_listener(self._on_commit)

    def _on_commit(self, tenant: str) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake.set)

    @property
    def running(self) -> bool:
        """Started and not ended (``/readyz``)."""
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._stopping = True  # ends the loop at its next round even if the cancellation were lost
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while not self._stopping:
            await woken(self._wake, self.poll)
            self._wake.clear()
            try:
                await self.drain()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: a round failed; retrying", self.name)

    async def drain(self) -> int:
        raise NotImplementedError


class OutboxDispatcher(OutboxLoop):
    name = "outbox-dispatcher"

    def __init__(
        self,
        engine: Engine,
        *,
        lease_seconds: float = 30.0,
        poll_seconds: float = 1.0,
        batch: int = 100,
        max_attempts: int = 10,
    ) -> None:
        super().__init__(engine, poll_seconds)
        self.max_attempts = max_attempts
        self._engine = engine
        self._subscriptions: list[Subscription] = []
        self._lease = lease_seconds
        self._batch = batch

    def subscribe(self, subscription: Subscription) -> None:
        self._subscriptions.append(subscription)

    async def drain(self) -> int:
        """Deliver what is due now to every consumer of every tenant; returns how many were handled."""
        handled = 0
        if not self._subscriptions:
            return 0
        for tenant in await self._engine.tenant_names():
            store = await self._engine.tenant(tenant)
            for subscription in self._subscriptions:
                while True:
                    events = await store.claim_events(subscription.name, self._batch, self._lease)
                    if not events:
                        break
                    skipped = [e.seq for e in events if not e.topic.startswith(subscription.topics)]
                    await store.ack_events(subscription.name, skipped)
                    for event in events:
                        if not event.topic.startswith(subscription.topics):
                            continue
                        try:
                            await subscription.handle(tenant, event)
                        except Exception:
                            if event.attempts < self.max_attempts:
                                log.exception(
                                    "consumer %s failed on event %s; it will be redelivered",
                                    subscription.name,
                                    event.seq,
                                )
                                continue
                            log.exception("consumer %s failed on event %s %d times: given up (dead letter)",
                                          subscription.name, event.seq, event.attempts)  # fmt: skip
                        await store.ack_event(subscription.name, event.seq)
                        handled += 1
                    if len(events) < self._batch:
                        break
        return handled
