"""A replayed refresh token ends its whole grant however long the chain (pentest-5 F2, RFC 9700 §4.14.2):
``Tickets.end_grant`` deletes batch after batch until none is left. Real parts: the Tickets of the server on an
encrypted SQLite engine; the chain is rotated with the same take/issue calls as ``CodeExchange.refresh_token``.
The batch size is made small so that the loop is exercised with a short chain; the thief's live token is
chosen as an attacker would: one whose key sorts after a full batch of used ones."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dermbridge.cli_support import opened_engine
from dermbridge.settings import Settings
from fhir_server.people import tickets
from fhir_server.people.tickets import Tickets, ticket_key

BATCH = 5


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def refreshes(tmp_path: Path) -> AsyncIterator[Tickets]:
    async with opened_engine(Settings(data_dir=tmp_path / "var")) as engine:
        await engine.create_tenant("alpha")
        yield Tickets(engine, "auth.refresh")


@pytest.mark.anyio
async def test_a_replay_ends_a_grant_rotated_past_one_batch(
    refreshes: Tickets, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tickets, "MAX_GRANT_TICKETS", BATCH)
    body = {"client_id": "app", "username": "ada", "scope": "openid", "grant": "chain-1"}
    first = live = await refreshes.issue("alpha", body, 3600)
    used: list[str] = []
    while sum(key < ticket_key(live) for key in used) < BATCH:  # the thief rotates until its key sorts late
        taken = await refreshes.take(live, "app")
        assert taken is not None and not taken[1].get("used")
        used.append(ticket_key(live))
        live = await refreshes.issue("alpha", body, 3600)
        assert len(used) < 500, "no late-sorting key drawn"
    replayed = await refreshes.take(first, "app")
    assert replayed is not None and replayed[1]["used"]
    await refreshes.end_grant("alpha", "chain-1")
    assert await refreshes.read(live) is None
    assert await refreshes.read(first) is None
