"""The token endpoint's lockout: per (client, address) pair, exponential, bounded (a stepped clock)."""

from __future__ import annotations

import pytest

from fhir_server.security.lockout import Lockout, MemoryStrikes

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class SteppedClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def fail(lockout: Lockout, client: str, address: str, times: int) -> None:
    for _ in range(times):
        await lockout.fail(client, address)


async def test_a_lock_holds_the_pair_not_the_client_everywhere() -> None:
    lockout = Lockout(clock=SteppedClock())
    await fail(lockout, "default.victim", "203.0.113.9", 9)
    assert await lockout.retry_after("default.victim", "203.0.113.9") is None
    await lockout.fail("default.victim", "203.0.113.9")
    assert await lockout.retry_after("default.victim", "203.0.113.9") == 61
    assert await lockout.retry_after("default.victim", "198.51.100.4") is None  # the owner elsewhere is not locked
    assert await lockout.retry_after("default.other", "203.0.113.9") is None


async def test_each_new_lock_doubles_up_to_the_ceiling() -> None:
    clock = SteppedClock()
    lockout = Lockout(clock=clock, base=60, ceiling=400)
    waits = []
    for _ in range(5):
        await fail(lockout, "default.c", "a", 10)
        wait = await lockout.retry_after("default.c", "a")
        assert wait is not None
        waits.append(wait - 1)
        clock.now += wait
    assert waits == [60, 120, 240, 400, 400]
    clock.now += 401  # quiet for longer than the longest lock after the last one: back to the base
    await fail(lockout, "default.c", "a", 10)
    assert await lockout.retry_after("default.c", "a") == 61


async def test_a_success_clears_the_pair_and_one_address_spraying_ids_is_locked() -> None:
    lockout = Lockout(clock=SteppedClock())
    await fail(lockout, "default.c", "a", 9)
    await lockout.succeed("default.c", "a")
    await fail(lockout, "default.c", "a", 9)
    assert await lockout.retry_after("default.c", "a") is None  # the count started again
    for n in range(50 - 18):
        await lockout.fail(f"default.guess{n}", "a")
    assert await lockout.retry_after("default.new", "a") == 61  # 50 failures from one address, whatever the ids
    assert await lockout.retry_after("default.new", "b") is None


async def test_memory_is_bounded_under_a_spray_of_keys() -> None:
    clock = SteppedClock()
    lockout = Lockout(clock=clock, book=MemoryStrikes(capacity=100), address_limit=10**9)
    for n in range(1000):
        clock.now += 1
        await lockout.fail(f"default.{n}", f"10.0.{n // 250}.{n % 250}")
    assert len(lockout.book._strikes) <= 100  # type: ignore[attr-defined]
