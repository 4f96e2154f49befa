"""Every committed write appends an outbox event; in-process consumers get each at least once."""

from __future__ import annotations

import asyncio
import time

from fhir_server.outbox import OutboxLoop, Subscription
from fhir_server.storage.port import OutboxEvent
from tests.conftest import BASE, FhirTestClient
from tests.factories import patient


def wait_for(condition, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_events_follow_writes_and_failed_consumers_get_them_again(client: FhirTestClient) -> None:
    received: list[tuple[str, str, int]] = []
    failures = {"left": 1}

    async def consumer(tenant: str, event: OutboxEvent) -> None:
        if failures["left"] and event.topic == "resource.updated" and event.payload["type"] == "Patient":
            failures["left"] -= 1
            raise RuntimeError("transient failure")
        if event.payload["type"] != "AuditEvent":  # every interaction also writes its AuditEvent
            received.append((event.topic, event.payload["id"], event.payload["version"]))

    dispatcher = client.app.state.dispatcher  # type: ignore[attr-defined]
    dispatcher._lease = 0.2
    dispatcher.subscribe(Subscription("test-consumer", ("resource.",), consumer))
    created = client.post(f"{BASE}/Patient", json=patient()).json()
    client.put(f"{BASE}/Patient/{created['id']}", json={**created, "gender": "male"})
    client.delete(f"{BASE}/Patient/{created['id']}")
    client.post(f"{BASE}/Patient", json={"resourceType": "Patient", "gender": "robot"})  # rejected: no event
    expected = [
        ("resource.created", created["id"], 1),
        ("resource.updated", created["id"], 2),
        ("resource.deleted", created["id"], 3),
    ]
    wait_for(lambda: sorted(received) == sorted(expected))
    time.sleep(0.5)
    assert sorted(received) == sorted(expected)  # acknowledged events are not delivered again


class IdleLoop(OutboxLoop):
    """An outbox loop with nothing to drain: it only waits for wake-ups, as an idle dispatcher does."""

    name = "idle-loop"

    async def drain(self) -> int:
        return 0


def test_a_commit_as_a_loop_stops_does_not_keep_it_running(client: FhirTestClient) -> None:
    """A commit's wake-up in the same loop iteration as ``stop()``'s cancel: under load it happens at
    every shutdown now and then, and the loop then ran on while the shutdown awaited it forever."""

    async def wake_and_stop() -> bool:
        loop = IdleLoop(client.app.state.engine)  # type: ignore[attr-defined]
        await loop.start()
        for _ in range(5):
            await asyncio.sleep(0)  # the loop is parked on its wake-up event
        loop._on_commit("default")  # what the engine calls on a commit (from its writer thread)
        await asyncio.sleep(0)  # the wake-up is delivered ...
        running = loop._task
        stopping = asyncio.create_task(loop.stop())  # ... and the cancel comes in the same iteration
        stopped, _ = await asyncio.wait({stopping}, timeout=10)
        if not stopped and running is not None:  # the old loop ran on: end it for this test's shutdown
            running.cancel()
            await asyncio.gather(running, stopping, return_exceptions=True)
        return bool(stopped)

    assert client.portal.call(wake_and_stop), "the loop swallowed its cancel and kept running"  # type: ignore[union-attr]
