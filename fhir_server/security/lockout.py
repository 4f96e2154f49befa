"""Lockout of repeated failed client authentication at the token endpoint.

RFC 6749 §10.10 asks a token endpoint to resist guessing of credentials, and OWASP ASVS V2.2.1 that
the defence not become a denial of service. A lock therefore falls on the **(client id, address)
pair** that failed, never on the client id alone (anyone who knows an id could lock its owner
out), plus a looser limit on the address itself (one caller spraying many ids). Each new lockout of
the same key lasts twice as long as the one before, from ``base`` up to ``ceiling`` seconds; a
success clears the pair. Memory is bounded: idle keys are forgotten first, then the oldest.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

PAIR_LIMIT = 10  # failures of one client id from one address within the window
ADDRESS_LIMIT = 50  # failures from one address, whatever the client ids
WINDOW_SECONDS = 300.0
BASE_LOCKOUT_SECONDS = 60.0
CEILING_SECONDS = 3600.0
CAPACITY = 100_000

Key = tuple[str, ...]


@dataclass(slots=True)
class _Strikes:
    failures: deque[float] = field(default_factory=deque)
    lockouts: int = 0  # lockouts so far: the next lasts base * 2**lockouts
    locked_until: float = 0.0
    last: float = 0.0


class Lockout:
    """Failure counts and locks per (client, address) pair and per address."""

    def __init__(
        self,
        pair_limit: int = PAIR_LIMIT,
        address_limit: int = ADDRESS_LIMIT,
        window: float = WINDOW_SECONDS,
        base: float = BASE_LOCKOUT_SECONDS,
        ceiling: float = CEILING_SECONDS,
        capacity: int = CAPACITY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pair_limit, self.address_limit, self.window = pair_limit, address_limit, window
        self.base, self.ceiling, self.capacity, self.clock = base, ceiling, capacity, clock
        self._strikes: dict[Key, _Strikes] = {}

    @staticmethod
    def _keys(client_id: str, address: str) -> tuple[Key, Key]:
        return ("pair", client_id, address), ("address", address)

    def retry_after(self, client_id: str, address: str) -> int | None:
        """Seconds until ``client_id`` may try again from ``address``; None when it may now."""
        now = self.clock()
        waits = [s.locked_until - now for k in self._keys(client_id, address) if (s := self._strikes.get(k))]
        longest = max(waits, default=0.0)
        return int(longest) + 1 if longest > 0 else None

    def fail(self, client_id: str, address: str) -> None:
        pair, by_address = self._keys(client_id, address)
        self._strike(pair, self.pair_limit)
        self._strike(by_address, self.address_limit)

    def succeed(self, client_id: str, address: str) -> None:
        self._strikes.pop(self._keys(client_id, address)[0], None)

    def _strike(self, key: Key, limit: int) -> None:
        now = self.clock()
        strikes = self._strikes.get(key)
        if strikes is None:
            self._make_room(now)
            strikes = self._strikes[key] = _Strikes()
        elif now - max(strikes.last, strikes.locked_until) > self.ceiling:
            strikes.lockouts = 0  # quiet for longer than the longest lock since: start again from base
        strikes.last = now
        strikes.failures.append(now)
        while strikes.failures and strikes.failures[0] < now - self.window:
            strikes.failures.popleft()
        if len(strikes.failures) >= limit:
            strikes.locked_until = now + min(self.base * 2**strikes.lockouts, self.ceiling)
            strikes.lockouts += 1
            strikes.failures.clear()

    def _make_room(self, now: float) -> None:
        if len(self._strikes) < self.capacity:
            return
        horizon = now - max(self.window, self.ceiling)
        self._strikes = {k: s for k, s in self._strikes.items() if s.locked_until > now or s.last >= horizon}
        if len(self._strikes) >= self.capacity:  # a spray of fresh keys: keep the newer half
            newest = sorted(self._strikes.items(), key=lambda item: item[1].last)[len(self._strikes) // 2 :]
            self._strikes = dict(newest)
