"""Subscriptions cannot turn the server into a request forger or a standing grant
(subscription.html#security): internal endpoints are refused unless allow-listed, checked again at
delivery, hop-by-hop headers are refused, ``end`` is capped, external owners must re-authorise."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fhir_server.subscriptions.guard import EndpointGuard
from fhir_server.subscriptions.owner import reauthorisation_due
from fhir_server.subscriptions.worker import REAUTHORISE, SubscriptionWorker
from tests.conftest import BASE, FhirTestClient, make_client
from tests.factories import observation
from tests.fhir_server.security.smart import IdentityProvider
from tests.fhir_server.subscriptions.endpoints import HookServer, hook_server, wait_for
from tests.fhir_server.subscriptions.test_rest_hook import FAST, subscription

GUARDED = {k: v for k, v in FAST.items() if k != "subscription_allowed_hosts"}


@pytest.fixture
def hook() -> Iterator[HookServer]:
    with hook_server() as server:
        yield server


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[FhirTestClient]:
    """A server with the default (empty) allow-list."""
    with make_client(tmp_path / "var", **GUARDED) as client:
        yield client


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://127.0.0.1:18999/ssrf",
        "http://localhost:18999/ssrf",
        "http://[::1]:18999/x",
        "http://10.0.0.5/x",
        "http://192.168.1.1/x",
        "http://172.16.0.1/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/x",
        "http://[fd00::1]/x",
        "http://0.0.0.0:18999/x",
        "http://224.0.0.1/x",
        "http://240.0.0.1/x",
        "http://[::ffff:127.0.0.1]/x",
    ],
)
def test_internal_endpoints_are_refused_at_activation(guarded: FhirTestClient, endpoint: str) -> None:
    body = subscription("Observation", endpoint, "application/fhir+json", header=["Authorization: Bearer internal"])
    response = guarded.post(f"{BASE}/Subscription", json=body)
    assert response.status_code == 422, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "not allowed" in outcome["issue"][0]["diagnostics"]
    assert guarded.get(f"{BASE}/Subscription").json().get("total", 0) == 0


@pytest.mark.parametrize("name", ["Host", "Content-Length", "Transfer-Encoding", "Connection", "upgrade"])
def test_hop_by_hop_and_framing_headers_are_refused(tmp_path: Path, name: str) -> None:
    with make_client(tmp_path / "var", **FAST) as fhir:
        body = subscription("Observation", "http://127.0.0.1:9/hook", header=[f"{name}: x"])
        response = fhir.post(f"{BASE}/Subscription", json=body)
        assert response.status_code == 422
        assert response.json()["resourceType"] == "OperationOutcome"
        ok = subscription("Observation", "http://127.0.0.1:9/hook", header=["Authorization: Bearer webhook"])
        assert fhir.post(f"{BASE}/Subscription", json=ok).status_code == 201


def test_the_address_rules_and_the_allow_list() -> None:
    guard = EndpointGuard(["10.1.0.0/16", "Hooks.Internal"])
    assert guard.permits(ipaddress.ip_address("10.1.2.3"))
    assert not guard.permits(ipaddress.ip_address("10.2.0.1"))
    assert guard.permits(ipaddress.ip_address("93.184.215.14"))
    assert guard.permits(ipaddress.ip_address("2606:4700::1111"))
    for refused in ("100.64.0.1", "198.18.0.1", "::", "ff02::1", "::ffff:169.254.169.254", "192.0.2.1"):
        assert not guard.permits(ipaddress.ip_address(refused)), refused
    assert "hooks.internal" in guard.names


def test_an_endpoint_refused_since_activation_is_not_called_at_delivery(tmp_path: Path, hook: HookServer) -> None:
    """The delivery checks the host again (a DNS answer or the allow-list may have changed since)."""
    with make_client(tmp_path / "var", **FAST) as fhir:
        created = fhir.post(f"{BASE}/Subscription", json=subscription("Observation", hook.url)).json()
        worker: SubscriptionWorker = fhir.app.state.subscriptions  # type: ignore[attr-defined]
        worker.channels.guard = EndpointGuard()  # the operator emptied the allow-list
        fhir.post(f"{BASE}/Observation", json=observation("Patient/p1"))
        wait_for(lambda: fhir.get(f"{BASE}/Subscription/{created['id']}").json()["status"] == "error")
        error = fhir.get(f"{BASE}/Subscription/{created['id']}").json()["error"]
        assert "not allowed" in error and "HTTP" not in error
        assert hook.attempts == 0 and hook.received == []


def test_a_named_host_is_delivered_to_the_address_checked(tmp_path: Path, hook: HookServer) -> None:
    """``localhost`` resolves to loopback: allowed by network here, and connected to by that address."""
    port = hook.url.split(":")[2].split("/")[0]
    settings = {**FAST, "subscription_allowed_hosts": ["127.0.0.0/8", "::1/128"]}
    with make_client(tmp_path / "var", **settings) as fhir:
        body = subscription("Observation", f"http://localhost:{port}/hook", header=["X-Named: yes"])
        assert fhir.post(f"{BASE}/Subscription", json=body).status_code == 201
        fhir.post(f"{BASE}/Observation", json=observation("Patient/p1"))
        wait_for(lambda: len(hook.received) == 1)
        assert hook.received[0].headers["host"] == f"localhost:{port}"


def _end(resource: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(resource["end"]))


def test_the_lifetime_is_capped(tmp_path: Path) -> None:
    with make_client(tmp_path / "var", subscription_max_lifetime_days=7, **FAST) as fhir:
        before = datetime.now(UTC).replace(microsecond=0)
        endless = fhir.post(f"{BASE}/Subscription", json=subscription("Observation", "http://127.0.0.1:9/h")).json()
        late = {**subscription("Observation", "http://127.0.0.1:9/h"), "end": "2999-01-01T00:00:00Z"}
        capped = fhir.post(f"{BASE}/Subscription", json=late).json()
        after = datetime.now(UTC)
        soon = {**subscription("Observation", "http://127.0.0.1:9/h"), "end": "2020-01-01T00:00:00Z"}
        kept = fhir.post(f"{BASE}/Subscription", json=soon).json()
    for resource in (endless, capped):
        assert before + timedelta(days=7) <= _end(resource) <= after + timedelta(days=7)
    assert _end(kept) == datetime(2020, 1, 1, tzinfo=UTC)


def test_an_external_providers_subject_must_reauthorise(tmp_path: Path, hook: HookServer) -> None:
    """Not revocable here: once its grant reaches the cap the Subscription turns off with the reason."""
    idp = IdentityProvider(tmp_path)
    with make_client(tmp_path / "var", **FAST, **idp.settings) as fhir:
        app = idp.headers("user/Subscription.cruds user/Observation.rs")
        created = fhir.post(f"{BASE}/Subscription", json=subscription("Observation", hook.url), headers=app).json()
        owner = {p["url"]: p["valueString"] for p in created["extension"][0]["extension"]}
        assert owner["issuer"] == idp.settings["oidc_issuer"] and owner["client"] == "app"
        until = datetime.fromisoformat(owner["authorised-until"])
        worker: SubscriptionWorker = fhir.app.state.subscriptions  # type: ignore[attr-defined]
        worker.clock = lambda: until  # the grant's last moment
        fhir.post(f"{BASE}/Observation", json=observation("Patient/p1"))
        wait_for(lambda: fhir.get(f"{BASE}/Subscription/{created['id']}").json()["status"] == "off")
        assert fhir.get(f"{BASE}/Subscription/{created['id']}").json()["error"] == REAUTHORISE
        assert hook.received == []
        worker.clock = lambda: datetime.now(UTC)
        again = fhir.put(f"{BASE}/Subscription/{created['id']}", json={**created, "status": "requested"}, headers=app)
        assert again.json()["status"] == "active" and "error" not in again.json()
        fhir.post(f"{BASE}/Observation", json=observation("Patient/p1"))
        wait_for(lambda: len(hook.received) == 1)


def test_a_registered_clients_subscription_has_no_reauthorisation_deadline(tmp_path: Path, hook: HookServer) -> None:
    with make_client(tmp_path / "var", **FAST) as fhir:
        created = fhir.post(f"{BASE}/Subscription", json=subscription("Observation", hook.url)).json()
        owner = {p["url"] for p in created["extension"][0]["extension"]}
        assert "issuer" not in owner  # revocable through the client registry instead
        assert not reauthorisation_due(created, datetime(2999, 1, 1, tzinfo=UTC))
        worker: SubscriptionWorker = fhir.app.state.subscriptions  # type: ignore[attr-defined]
        worker.clock = lambda: _end(created) - timedelta(seconds=1)
        fhir.post(f"{BASE}/Observation", json=observation("Patient/p1"))
        wait_for(lambda: len(hook.received) == 1)
