"""FHIR R4 Subscriptions with a rest-hook channel (subscription.html), delivered to a real HTTP
server on a loopback port: activation, payload modes, headers, scopes, retries, error, idempotency."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fhir_server.subscriptions.worker import SubscriptionWorker
from tests.conftest import BASE, FhirTestClient, make_client
from tests.factories import observation, patient
from tests.fhir_server.security.smart import IdentityProvider
from tests.fhir_server.subscriptions.endpoints import HookServer, hook_server, wait_for

# The hook servers listen on loopback: allow-listed as an operator would (DERMBRIDGE_SUBSCRIPTION_ALLOWED_HOSTS).
FAST: dict[str, Any] = {
    "subscription_retry_seconds": 0.05,
    "subscription_poll_seconds": 0.05,
    "subscription_max_attempts": 3,
    "subscription_allowed_hosts": ["127.0.0.1"],
}


def subscription(criteria: str, endpoint: str, payload: str | None = None, **channel: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "rest-hook", "endpoint": endpoint, **channel}
    if payload:
        body["payload"] = payload
    return {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "test",
        "criteria": criteria,
        "channel": body,
    }


@pytest.fixture
def hook() -> Iterator[HookServer]:
    with hook_server() as server:
        yield server


@pytest.fixture
def fhir(tmp_path: Path) -> Iterator[FhirTestClient]:
    with make_client(tmp_path / "var", **FAST) as client:
        yield client


def _subscribe(fhir: FhirTestClient, body: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    response = fhir.post(f"{BASE}/Subscription", json=body, **kwargs)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def _patient(fhir: FhirTestClient, family: str = "Doe") -> str:
    return f"Patient/{fhir.post(f'{BASE}/Patient', json=patient(family)).json()['id']}"


def test_ping_and_payload_deliveries_carry_headers_and_only_matches(fhir: FhirTestClient, hook: HookServer) -> None:
    ping = _subscribe(fhir, subscription("Observation?status=final", hook.url, header=["X-Api-Key: secret-1"]))
    full = _subscribe(fhir, subscription("Observation?code=http://loinc.org|1234-5", hook.url, "application/fhir+json"))
    assert ping["status"] == full["status"] == "active"
    ended = {**subscription("Observation", hook.url, header=["X-Ended: yes"]), "end": "2020-01-01T00:00:00Z"}
    _subscribe(fhir, ended)  # past its end: never delivers
    subject = _patient(fhir)
    matching = fhir.post(f"{BASE}/Observation", json=observation(subject, code="1234-5")).json()
    fhir.post(f"{BASE}/Observation", json=observation(subject, code="9999-9", status="preliminary"))  # no match
    wait_for(lambda: len(hook.received) >= 2)
    fhir.post(f"{BASE}/Patient", json=patient("Other"))  # another type: nobody subscribed
    marker = _subscribe(fhir, subscription("Patient?family=Marker", hook.url))  # later events are handled in order
    fhir.post(f"{BASE}/Patient", json=patient("Marker"))
    wait_for(
        lambda: any(r.path == "/hook" and r.method == "POST" and not r.headers.get("x-api-key") for r in hook.received)
    )
    by_kind = sorted((r.method, r.path) for r in hook.received)
    assert by_kind == [("POST", "/hook"), ("POST", "/hook"), ("PUT", f"/hook/Observation/{matching['id']}")]
    pinged = next(r for r in hook.received if r.headers.get("x-api-key"))
    assert pinged.headers["x-api-key"] == "secret-1" and pinged.body == b""
    put = next(r for r in hook.received if r.method == "PUT")
    assert put.headers["content-type"] == "application/fhir+json"
    assert json.loads(put.body)["id"] == matching["id"]
    assert marker["status"] == "active"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (subscription("Observation?no-such-param=1", "http://127.0.0.1:9/hook"), 400),
        (subscription("NoSuchType?status=final", "http://127.0.0.1:9/hook"), 400),
        (subscription("", "http://127.0.0.1:9/hook"), 422),
        (subscription("Observation?status=final", "ftp://example.org/x"), 422),
        (subscription("Observation", "http://127.0.0.1:9/hook", header=["no colon"]), 422),
        (subscription("Observation", "http://127.0.0.1:9/hook", "text/html"), 422),
        ({**subscription("Observation", "ws://x"), "channel": {"type": "websocket", "endpoint": "ws://x"}}, 422),
        ({**subscription("Observation", "ws://x"), "channel": {"type": "websocket", "payload": "text/plain"}}, 422),
        ({**subscription("Observation", "ws://x"), "channel": {"type": "sms", "endpoint": "tel:+4411"}}, 422),
    ],
)
def test_bad_subscriptions_are_refused_with_an_outcome(fhir: FhirTestClient, body: dict[str, Any], status: int) -> None:
    response = fhir.post(f"{BASE}/Subscription", json=body)
    assert response.status_code in (status, 404 if status == 400 else status), response.text
    assert response.json()["resourceType"] == "OperationOutcome"


def test_patch_is_refused_and_put_reactivates_without_the_clients_owner(fhir: FhirTestClient) -> None:
    created = _subscribe(fhir, subscription("Observation", "http://127.0.0.1:9/hook"))
    patched = fhir.patch(
        f"{BASE}/Subscription/{created['id']}",
        content=b'[{"op":"replace","path":"/status","value":"active"}]',
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert patched.status_code == 422
    forged = {
        **created,
        "status": "error",
        "extension": [
            {"url": created["extension"][0]["url"], "extension": [{"url": "system", "valueString": "forged"}]}
        ],
    }
    updated = fhir.put(f"{BASE}/Subscription/{created['id']}", json=forged).json()
    assert updated["status"] == "active"
    assert {p["url"] for p in updated["extension"][0]["extension"]} >= {"client", "scope"}


def test_a_patient_scoped_subscription_never_fires_for_another_patient(tmp_path: Path, hook: HookServer) -> None:
    idp = IdentityProvider(tmp_path)
    with make_client(tmp_path / "var", **FAST, **idp.settings) as fhir:
        mine, other = _patient(fhir, "Mine"), _patient(fhir, "Other")
        app = idp.headers("user/Subscription.cruds patient/Observation.rs", patient=mine.split("/")[1])
        _subscribe(fhir, subscription("Observation", hook.url, "application/fhir+json"), headers=app)
        theirs = fhir.post(f"{BASE}/Observation", json=observation(other)).json()
        own = fhir.post(f"{BASE}/Observation", json=observation(mine)).json()
        wait_for(lambda: len(hook.received) >= 1)
        _flush(fhir, hook)
        assert [r.path for r in hook.received] == [f"/hook/Observation/{own['id']}"]
        assert theirs["id"] not in b"".join(r.body for r in hook.received).decode()
        unseen = idp.headers("user/Subscription.cruds", patient=mine.split("/")[1])  # no Observation scope at all
        refused = fhir.post(f"{BASE}/Subscription", json=subscription("Observation", hook.url), headers=unseen)
        assert refused.status_code == 403


def _flush(fhir: FhirTestClient, hook: HookServer) -> None:
    """Until every change committed so far is handled: the worker takes events in commit order, so
    once a marker change made now is delivered, everything before it has been."""
    marker = f"Marker{len(hook.received)}x{hook.attempts}"
    _subscribe(fhir, subscription(f"Patient?family={marker}", hook.url, header=[f"X-Marker: {marker}"]))
    fhir.post(f"{BASE}/Patient", json=patient(marker))
    wait_for(lambda: any(r.headers.get("x-marker") == marker for r in hook.received))
    hook.received[:] = [r for r in hook.received if r.headers.get("x-marker") != marker]


def test_retries_after_failures_then_error_after_repeated_failure(fhir: FhirTestClient, hook: HookServer) -> None:
    created = _subscribe(fhir, subscription("Observation", hook.url))
    hook.fail_next = 2  # the endpoint is down for two attempts, then recovers
    subject = _patient(fhir)
    fhir.post(f"{BASE}/Observation", json=observation(subject))
    wait_for(lambda: len(hook.received) == 1)
    assert hook.attempts == 3
    assert fhir.get(f"{BASE}/Subscription/{created['id']}").json()["status"] == "active"
    hook.fail_next = 1000  # down for good: after max_attempts (3) the Subscription is in error
    fhir.post(f"{BASE}/Observation", json=observation(subject))
    wait_for(lambda: fhir.get(f"{BASE}/Subscription/{created['id']}").json()["status"] == "error")
    failed = fhir.get(f"{BASE}/Subscription/{created['id']}").json()
    assert "HTTP status 503" in failed["error"] and "3 attempts" in failed["error"]
    assert hook.attempts == 6 and len(hook.received) == 1
    audit = fhir.get(f"{BASE}/AuditEvent", params={"subtype": "urn:dermbridge:audit|notification"}).json()
    outcomes = sorted(e["resource"]["outcome"] for e in audit.get("entry", []))
    assert outcomes == ["0", "4", "4", "4", "4", "8"]  # every failed attempt too, not only the last


def test_a_redelivered_event_is_not_sent_twice(fhir: FhirTestClient, hook: HookServer) -> None:
    _subscribe(fhir, subscription("Observation", hook.url))
    fhir.post(f"{BASE}/Observation", json=observation(_patient(fhir)))
    wait_for(lambda: len(hook.received) == 1)
    worker: SubscriptionWorker = fhir.app.state.subscriptions  # type: ignore[attr-defined]

    async def redeliver_everything() -> int:
        store = await worker.engine.tenant("default")
        events = await store.claim_events("replay", 1000, 60.0)  # every event again, as after a crash
        for event in events:
            await worker.handle(store, event)
        return len(events)

    assert fhir.portal.call(redeliver_everything) > 0
    assert len(hook.received) == 1


def test_a_subscription_in_a_transaction_is_activated_and_an_off_one_stays_off(
    fhir: FhirTestClient, hook: HookServer
) -> None:
    off = {**subscription("Observation", hook.url, header=["X-Off: yes"]), "status": "off"}
    entries = [
        {"resource": subscription("Observation", hook.url), "request": {"method": "POST", "url": "Subscription"}},
        {"resource": off, "request": {"method": "POST", "url": "Subscription"}},
    ]
    response = fhir.post(BASE, json={"resourceType": "Bundle", "type": "transaction", "entry": entries})
    assert response.status_code == 200, response.text
    found = fhir.get(f"{BASE}/Subscription").json()["entry"]
    assert sorted(e["resource"]["status"] for e in found) == ["active", "off"]
    fhir.post(f"{BASE}/Observation", json=observation("Patient/p1"))
    wait_for(lambda: len(hook.received) == 1)
    _flush(fhir, hook)
    assert [r.headers.get("x-off") for r in hook.received] == [None]


def test_a_disabled_clients_subscription_goes_silent(fhir: FhirTestClient, hook: HookServer) -> None:
    other = {"Authorization": f"Bearer {fhir.token()}"}
    created = _subscribe(fhir, subscription("Observation", hook.url, header=["X-Owner: other"]), headers=other)
    owner = {p["url"]: p["valueString"] for p in created["extension"][0]["extension"]}
    fhir.post(f"{BASE}/Observation", json=observation("Patient/p1"))
    wait_for(lambda: len(hook.received) == 1)
    fhir.portal.call(fhir.app.state.clients.set_active, owner["client"], False)  # type: ignore[attr-defined]
    fhir.post(f"{BASE}/Observation", json=observation("Patient/p1"))
    _flush(fhir, hook)
    assert len(hook.received) == 1
