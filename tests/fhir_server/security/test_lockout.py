"""The token endpoint's lockout: per (client, address) pair, exponential, bounded (a stepped clock)."""

from __future__ import annotations

from fhir_server.security.lockout import Lockout


class SteppedClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fail(lockout: Lockout, client: str, address: str, times: int) -> None:
    for _ in range(times):
        lockout.fail(client, address)


def test_a_lock_holds_the_pair_not_the_client_everywhere() -> None:
    lockout = Lockout(clock=SteppedClock())
    fail(lockout, "default.victim", "203.0.113.9", 9)
    assert lockout.retry_after("default.victim", "203.0.113.9") is None
    lockout.fail("default.victim", "203.0.113.9")
    assert lockout.retry_after("default.victim", "203.0.113.9") == 61
    assert lockout.retry_after("default.victim", "198.51.100.4") is None  # the owner elsewhere is not locked
    assert lockout.retry_after("default.other", "203.0.113.9") is None


def test_each_new_lock_doubles_up_to_the_ceiling() -> None:
    clock = SteppedClock()
    lockout = Lockout(clock=clock, base=60, ceiling=400)
    waits = []
    for _ in range(5):
        fail(lockout, "default.c", "a", 10)
        wait = lockout.retry_after("default.c", "a")
        assert wait is not None
        waits.append(wait - 1)
        clock.now += wait
    assert waits == [60, 120, 240, 400, 400]
    clock.now += 401  # quiet for longer than the longest lock after the last one: back to the base
    fail(lockout, "default.c", "a", 10)
    assert lockout.retry_after("default.c", "a") == 61


def test_a_success_clears_the_pair_and_one_address_spraying_ids_is_locked() -> None:
    lockout = Lockout(clock=SteppedClock())
    fail(lockout, "default.c", "a", 9)
    lockout.succeed("default.c", "a")
    fail(lockout, "default.c", "a", 9)
    assert lockout.retry_after("default.c", "a") is None  # the count started again
    for n in range(50 - 18):
        lockout.fail(f"default.guess{n}", "a")
    assert lockout.retry_after("default.new", "a") == 61  # 50 failures from one address, whatever the ids
    assert lockout.retry_after("default.new", "b") is None


def test_memory_is_bounded_under_a_spray_of_keys() -> None:
    clock = SteppedClock()
    lockout = Lockout(clock=clock, capacity=100, address_limit=10**9)
    for n in range(1000):
        clock.now += 1
        lockout.fail(f"default.{n}", f"10.0.{n // 250}.{n % 250}")
    assert len(lockout._strikes) <= 100
