"""Token security on a real ``dermbridge serve`` process: whose word counts for the caller's
address (X-Forwarded-For), and a client disabled from another process losing its tokens."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx2

from tests.server import Server, cli, create_client, fetch_token, running_server


def token_form(client: dict[str, str], secret: str) -> dict[str, str]:
    return {"grant_type": "client_credentials", "client_id": client["client_id"], "client_secret": secret}


def refusal_addresses(server: Server, client_id: str) -> set[str]:
    """The caller addresses the audit trail recorded for refused token requests of ``client_id``."""
    found = server.http.get(f"{server.base}/AuditEvent", params={"_count": "500", "outcome": "4"})
    assert found.status_code == 200, found.text
    events = [e["resource"] for e in found.json().get("entry", [])]
    agents = [e["agent"][0] for e in events if e["subtype"][0]["code"] == "110122"]
    return {a["network"]["address"] for a in agents if a["who"]["display"] == client_id}


def guess_secrets(server: Server, client: dict[str, str], times: int, forwarded_for: str) -> None:
    for n in range(times):
        headers = {"X-Forwarded-For": forwarded_for.format(n=n)}
        refused = httpx2.post(f"{server.root}/auth/token", data=token_form(client, "guess"), headers=headers)
        assert refused.status_code == 401, refused.text


def ask_with(server: Server, client: dict[str, str], forwarded_for: str) -> int:
    headers = {"X-Forwarded-For": forwarded_for}
    return httpx2.post(
        f"{server.root}/auth/token", data=token_form(client, client["client_secret"]), headers=headers
    ).status_code


def test_a_forged_x_forwarded_for_is_ignored_without_a_configured_proxy(tmp_path: Path) -> None:
    data = tmp_path / "var"
    victim = create_client(data)
    with running_server(data) as server:
        guess_secrets(server, victim, 10, "198.51.100.{n}")  # a new spoofed address for each guess
        assert ask_with(server, victim, "198.51.100.200") == 429  # the lock still holds this caller
        assert refusal_addresses(server, victim["client_id"]) == {"127.0.0.1"}


def test_x_forwarded_for_is_honoured_from_a_configured_proxy(tmp_path: Path) -> None:
    data = tmp_path / "var"
    victim = create_client(data)
    with running_server(data, env={"DERMBRIDGE_FORWARDED_ALLOW_IPS": '["127.0.0.1"]'}) as server:
        guess_secrets(server, victim, 10, "203.0.113.66")
        assert ask_with(server, victim, "203.0.113.66") == 429
        assert ask_with(server, victim, "198.51.100.7") == 200  # the owner, behind the same proxy
        assert refusal_addresses(server, victim["client_id"]) == {"203.0.113.66"}


def status_within(url: str, token: str, wanted: int, bound: float = 30.0) -> int:
    """GET ``url`` until it answers ``wanted`` (or the bound passes): the answer last seen."""
    deadline = time.monotonic() + bound
    while True:
        status = httpx2.get(url, headers={"Authorization": f"Bearer {token}"}).status_code
        if status == wanted or time.monotonic() > deadline:
            return status
        time.sleep(0.2)


def run(*args: Any) -> None:
    done = cli(*[str(a) for a in args])
    assert done.returncode == 0, done.stderr


def test_disabling_a_client_in_another_process_revokes_its_tokens(tmp_path: Path) -> None:
    data = tmp_path / "var"
    reader = create_client(data, "default", "clinician-reviewer")
    with running_server(data) as server:
        old = fetch_token(server.root, reader)
        assert httpx2.get(f"{server.base}/Patient", headers={"Authorization": f"Bearer {old}"}).status_code == 200
        run("client", "disable", "--client-id", reader["client_id"], "--data-dir", data)
        assert status_within(f"{server.base}/Patient", old, 401) == 401
        refused = httpx2.post(f"{server.root}/auth/token", data=token_form(reader, reader["client_secret"]))
        assert refused.status_code == 401
        run("client", "enable", "--client-id", reader["client_id"], "--data-dir", data)
        issued = httpx2.post(f"{server.root}/auth/token", data=token_form(reader, reader["client_secret"]))
        assert issued.status_code == 200, issued.text  # the endpoint reads the client afresh
        new = issued.json()["access_token"]
        assert status_within(f"{server.base}/Patient", new, 200) == 200
        assert httpx2.get(f"{server.base}/Patient", headers={"Authorization": f"Bearer {old}"}).status_code == 401
