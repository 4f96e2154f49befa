"""Every committed write appends an outbox event; in-process consumers get each at least once."""

from __future__ import annotations

import sqlite3
import time

from fhir_server.outbox import Subscription
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


def test_a_poison_event_is_given_up_after_the_attempt_limit(client: FhirTestClient) -> None:
    """Pentest 3, finding 1: a consumer failing on an event for ever got it again every lease, with no end."""
    tries: dict[str, int] = {}

    async def failing(tenant: str, event: OutboxEvent) -> None:
        if event.payload["type"] == "Patient":
            tries[event.payload["id"]] = tries.get(event.payload["id"], 0) + 1
            raise TypeError("unexpected keyword argument")

    dispatcher = client.app.state.dispatcher  # type: ignore[attr-defined]
    dispatcher._lease, dispatcher.max_attempts = 0.05, 3
    dispatcher.subscribe(Subscription("poisoned-consumer", ("resource.created",), failing))
    created = client.post(f"{BASE}/Patient", json=patient()).json()["id"]
    wait_for(lambda: tries.get(created, 0) >= 3)
    database = client.app.state.settings.data_dir / "tenants" / "default.sqlite"  # type: ignore[attr-defined]

    def given_up() -> bool:  # acknowledged for this consumer (read beside the server, as any reader may)
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as conn:
            (seq,) = conn.execute("SELECT seq FROM outbox WHERE topic = 'resource.created' AND payload LIKE ?",
                                  (f'%"{created}"%',)).fetchone()  # fmt: skip
            cursor = conn.execute("SELECT acked_through FROM outbox_cursor WHERE consumer = 'poisoned-consumer'")
            acked = conn.execute("SELECT acked FROM outbox_delivery WHERE consumer = 'poisoned-consumer' AND seq = ?",
                                 (seq,)).fetchone()  # fmt: skip
            return seq <= ((cursor.fetchone() or (0,))[0]) or acked == (1,)

    wait_for(given_up)
    assert tries[created] == 3
