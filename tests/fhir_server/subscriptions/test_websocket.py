"""The R4 websocket Subscription channel (subscription.html, channel "websocket") against a real ``dermbridge serve``
over a real socket (the ``websockets`` client): found through the CapabilityStatement, bound by the
Subscription's owner with its bearer token, one ``ping {id}`` per match in commit order; refused
without a token, for another client's Subscription, and past the caps; every bind and ping audited."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.factories import observation, patient
from tests.fhir_server.subscriptions.endpoints import wait_for
from tests.server import Server, create_client, fetch_token, running_server

WEBSOCKET_EXTENSION = "http://hl7.org/fhir/StructureDefinition/capabilitystatement-websocket"
REPLY_SECONDS = 30.0  # a bound on waiting for a message, not a pause


@dataclass
class Site:
    server: Server
    url: str  # the websocket URL the CapabilityStatement advertises
    other_token: str  # a second admin client's token: it owns none of the admin's Subscriptions

    def open(self, token: str | None = None) -> ClientConnection:
        token = self.server.token if token is None else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return connect(self.url, additional_headers=headers, open_timeout=REPLY_SECONDS)

    def post(self, path: str, body: dict[str, Any], token: str | None = None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else self.server.headers
        response = httpx2.post(f"{self.server.base}/{path}", json=body, headers=headers, timeout=60)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    def subscribe(self, criteria: str, token: str | None = None) -> str:
        body = {"resourceType": "Subscription", "status": "requested", "reason": "test", "criteria": criteria}
        created = self.post("Subscription", {**body, "channel": {"type": "websocket"}}, token)
        assert created["status"] == "active"
        return str(created["id"])


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    data: Path = tmp_path_factory.mktemp("websocket")
    other = create_client(data)
    with running_server(data, env={"DERMBRIDGE_SUBSCRIPTION_POLL_SECONDS": "0.2"}) as server:
        metadata = httpx2.get(f"{server.base}/metadata", timeout=60).json()
        advertised = [e["valueUri"] for e in metadata["rest"][0]["extension"] if e["url"] == WEBSOCKET_EXTENSION]
        yield Site(server, advertised[0], fetch_token(server.root, other))


def _recv(socket: ClientConnection) -> str:
    return str(socket.recv(timeout=REPLY_SECONDS))


def _bind(socket: ClientConnection, subscription_id: str) -> str:
    socket.send(f"bind {subscription_id}")
    return _recv(socket)


def test_the_capability_statement_advertises_the_socket(site: Site) -> None:
    assert site.url == site.server.base.replace("http://", "ws://") + "/$subscription-websocket"


def test_only_matching_changes_ping_in_commit_order(site: Site) -> None:
    melanoma = site.subscribe("Observation?code=http://loinc.org|1111-1")
    naevus = site.subscribe("Observation?code=http://loinc.org|2222-2")
    subject = f"Patient/{site.post('Patient', patient('Socket'))['id']}"
    with site.open() as socket:
        assert _bind(socket, melanoma) == f"bound {melanoma}"
        assert _bind(socket, naevus) == f"bound {naevus}"
        site.post("Observation", observation(subject, code="9999-9"))  # matches neither
        site.post("Observation", observation(subject, code="2222-2"))
        site.post("Observation", observation(subject, code="1111-1"))
        # in commit order: a ping for the first (non-matching) change would have come first
        assert [_recv(socket), _recv(socket)] == [f"ping {naevus}", f"ping {melanoma}"]
    audit = f"{site.server.base}/AuditEvent"

    def audited(subtype: str, subscription_id: str) -> bool:
        params = {"subtype": f"urn:dermbridge:audit|{subtype}", "entity": f"Subscription/{subscription_id}"}
        found = httpx2.get(audit, params=params, headers=site.server.headers, timeout=60).json()
        return any("websocket" in str(e["resource"].get("agent")) for e in found.get("entry", []))

    wait_for(lambda: audited("websocket-bind", melanoma) and audited("notification", melanoma), timeout=60)


def test_a_socket_needs_a_token_of_its_tenant(site: Site) -> None:
    for token, status in (("", 401), ("not-a-jwt", 401)):
        with pytest.raises(InvalidStatus) as refused:
            site.open(token)
        assert refused.value.response.status_code == status
        assert b"OperationOutcome" in refused.value.response.body
    elsewhere = site.url.replace("/fhir/default/", "/fhir/nosuchtenant/")
    with pytest.raises(InvalidStatus) as refused:
        connect(elsewhere, additional_headers=site.server.headers, open_timeout=REPLY_SECONDS)
    assert refused.value.response.status_code == 404


def test_another_clients_subscription_cannot_be_bound(site: Site) -> None:
    mine = site.subscribe("Observation?code=http://loinc.org|3333-3")
    theirs = site.subscribe("Observation?code=http://loinc.org|3333-3", token=site.other_token)
    subject = f"Patient/{site.post('Patient', patient('Other'))['id']}"
    with site.open(site.other_token) as socket:
        assert _bind(socket, mine) == f"error 404 no websocket Subscription {mine} of yours"
        assert _bind(socket, "no-such-id") == "error 404 no websocket Subscription no-such-id of yours"
        assert _bind(socket, "bad id!").startswith("error 400")
        assert _bind(socket, theirs) == f"bound {theirs}"
        site.post("Observation", observation(subject, code="3333-3"))
        assert _recv(socket) == f"ping {theirs}"  # and nothing for the refused binding before it


def test_caps_on_bindings_and_sockets(site: Site) -> None:
    ids = [site.subscribe("Observation?code=http://loinc.org|4444-4") for _ in range(17)]
    with site.open() as socket:
        replies = [_bind(socket, i) for i in ids]
        assert replies[:16] == [f"bound {i}" for i in ids[:16]]
        assert replies[16] == "error 429 at most 16 bindings per socket"
        socket.send("subscribe please")
        assert _recv(socket).startswith("error 400")
    with contextlib.ExitStack() as sockets:
        for _ in range(4):
            sockets.enter_context(site.open())
        with pytest.raises(InvalidStatus) as refused:
            site.open()
        assert refused.value.response.status_code == 429

    def reopens() -> bool:  # closed sockets stop counting once the server has seen them close
        try:
            with site.open():
                return True
        except InvalidStatus:
            return False

    wait_for(reopens)


def test_an_idle_socket_and_an_old_one_are_closed(tmp_path: Path) -> None:
    limits = {
        "DERMBRIDGE_SUBSCRIPTION_WEBSOCKET_BIND_SECONDS": "1",
        "DERMBRIDGE_SUBSCRIPTION_WEBSOCKET_MAX_SECONDS": "3",
    }
    with running_server(tmp_path / "var", env=limits) as server:
        url = server.base.replace("http://", "ws://") + "/$subscription-websocket"
        site = Site(server, url, "")
        with site.open() as idle:  # never binds
            with pytest.raises(ConnectionClosed) as closed:
                idle.recv(timeout=REPLY_SECONDS)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        subscription_id = site.subscribe("Observation")
        with site.open() as bound:
            assert _bind(bound, subscription_id) == f"bound {subscription_id}"
            with pytest.raises(ConnectionClosed) as closed:
                bound.recv(timeout=REPLY_SECONDS)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
            assert "reconnect" in closed.value.rcvd.reason


def test_the_socket_is_served_by_a_process_without_the_worker(tmp_path: Path) -> None:
    """The worker in one process records the match; another process, holding the socket, pings."""
    data = tmp_path / "var"
    socket_only = {"DERMBRIDGE_SUBSCRIPTIONS_ENABLED": "false", "DERMBRIDGE_SUBSCRIPTION_POLL_SECONDS": "0.2"}
    with running_server(data) as worker, running_server(data, env=socket_only) as api:
        url = api.base.replace("http://", "ws://") + "/$subscription-websocket"
        site = Site(api, url, "")
        subscription_id = site.subscribe("Observation?code=http://loinc.org|5555-5")
        subject = f"Patient/{site.post('Patient', patient('Apart'))['id']}"
        with site.open() as socket:
            assert _bind(socket, subscription_id) == f"bound {subscription_id}"
            Site(worker, url, "").post("Observation", observation(subject, code="5555-5"))
            assert _recv(socket) == f"ping {subscription_id}"


def test_a_binding_ends_when_another_client_takes_the_subscription_over(site: Site) -> None:
    subscription_id = site.subscribe("Observation?code=http://loinc.org|6666-6")
    subject = f"Patient/{site.post('Patient', patient('Taken'))['id']}"
    with site.open() as socket:
        assert _bind(socket, subscription_id) == f"bound {subscription_id}"
        url = f"{site.server.base}/Subscription/{subscription_id}"
        current = httpx2.get(url, headers=site.server.headers, timeout=60).json()
        other = {"Authorization": f"Bearer {site.other_token}"}
        assert httpx2.put(url, json=current, headers=other, timeout=60).status_code == 200  # now the other's
        site.post("Observation", observation(subject, code="6666-6"))
        assert _recv(socket) == f"error 404 unbound: no websocket Subscription {subscription_id} of yours"


def test_an_oversized_message_closes_the_socket(site: Site) -> None:
    with site.open() as socket:
        socket.send("bind " + "x" * 300)
        assert _recv(socket).startswith("error 400 a message is text of at most 256 characters")
        with pytest.raises(ConnectionClosed) as closed:
            socket.recv(timeout=REPLY_SECONDS)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


def test_probing_for_subscription_ids_closes_the_socket(site: Site) -> None:
    with site.open(site.other_token) as socket:
        replies = [_bind(socket, f"guess-{n}") for n in range(16)]
        assert all(r.startswith("error 404") for r in replies)
        with pytest.raises(ConnectionClosed) as closed:
            socket.recv(timeout=REPLY_SECONDS)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
