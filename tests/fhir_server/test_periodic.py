"""The background rounds (staged-audit sweep, lapsed-claim sweep, retention) outlive a failed round."""

from __future__ import annotations

import asyncio

import pytest

from fhir_server.periodic import Periodic


class Flaky(Periodic):
    name = "flaky"

    def __init__(self) -> None:
        super().__init__(0.01)
        self.rounds = 0
        self.second = asyncio.Event()

    async def run(self) -> None:
        self.rounds += 1
        if self.rounds == 1:
            raise ConnectionError("the database went away")  # as tenant_names() on a blip
        self.second.set()


@pytest.mark.anyio
async def test_a_failed_round_is_retried_and_the_loop_keeps_running() -> None:
    rounds = Flaky()
    rounds.start()
    try:
        await asyncio.wait_for(rounds.second.wait(), timeout=60)
        assert rounds.running and rounds.rounds >= 2
    finally:
        await rounds.stop()
    assert not rounds.running
