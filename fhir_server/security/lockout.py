"""Lockout of repeated failed client authentication at the token endpoint.

RFC 6749 §10.10 asks a token endpoint to resist guessing of credentials, and OWASP ASVS V2.2.1 that
the defence not become a denial of service. A lock therefore falls on the **(client id, address)
pair** that failed, never on the client id alone (anyone who knows an id could lock its owner
out), plus a looser limit on the address itself (one caller spraying many ids). Each new lockout of
the same key lasts twice as long as the one before, from ``base`` up to ``ceiling`` seconds; a
success clears the pair.

Behind a load balancer every API process must count the same failures, or N processes give a guesser N
times the attempts: the strikes live in the database (``RecordStrikes``: records of one tenant, keyed by a
SHA-256 of the pair or address, so no address is stored in clear; each update one transaction; idle records
pruned on writes). ``MemoryStrikes`` keeps them in one process (bounded: idle keys are forgotten first, then
the oldest), for a single process and the tests of the policy.
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import orjson

from fhir_server.storage.port import Engine, Record
from fhir_server.storage.query import FieldMatch, RecordQuery

PAIR_LIMIT = 10  # failures of one client id from one address within the window
ADDRESS_LIMIT = 50  # failures from one address, whatever the client ids
WINDOW_SECONDS = 300.0
BASE_LOCKOUT_SECONDS = 60.0
CEILING_SECONDS = 3600.0
CAPACITY = 100_000
COLLECTION = "lockout-strikes"
PRUNE = 100  # idle records deleted per update at most

Key = tuple[str, ...]
Change = Callable[["_Strikes | None"], "_Strikes | None"]


@dataclass(slots=True)
class _Strikes:
    failures: deque[float] = field(default_factory=deque)
    lockouts: int = 0  # lockouts so far: the next lasts base * 2**lockouts
    locked_until: float = 0.0
    last: float = 0.0


class StrikeBook(Protocol):
    """Where the strikes of each key are kept."""

    async def get(self, key: Key) -> _Strikes | None: ...

    async def update(self, key: Key, change: Change, now: float) -> None:
        """``change`` applied to the key's strikes (None: none yet; returning None forgets them), atomically."""
        ...


class MemoryStrikes:
    """One process's strikes, at most ``capacity`` keys."""

    def __init__(self, capacity: int = CAPACITY, horizon: float = max(WINDOW_SECONDS, CEILING_SECONDS)) -> None:
        self.capacity, self.horizon = capacity, horizon
        self._strikes: dict[Key, _Strikes] = {}

    async def get(self, key: Key) -> _Strikes | None:
        return self._strikes.get(key)

    async def update(self, key: Key, change: Change, now: float) -> None:
        if key not in self._strikes:
            self._make_room(now)
        changed = change(self._strikes.get(key))
        if changed is None:
            self._strikes.pop(key, None)
        else:
            self._strikes[key] = changed

    def _make_room(self, now: float) -> None:
        if len(self._strikes) < self.capacity:
            return
        horizon = now - self.horizon
        self._strikes = {k: s for k, s in self._strikes.items() if s.locked_until > now or s.last >= horizon}
        if len(self._strikes) >= self.capacity:  # a spray of fresh keys: keep the newer half
            newest = sorted(self._strikes.items(), key=lambda item: item[1].last)[len(self._strikes) // 2 :]
            self._strikes = dict(newest)


def _until(instant: float) -> str:
    return f"{int(instant):012d}"  # fixed width: string order is time order for the range match


class RecordStrikes:
    """The strikes as records of ``tenant``, shared by every process on the database."""

    def __init__(self, engine: Engine, tenant: str, horizon: float = max(WINDOW_SECONDS, CEILING_SECONDS)) -> None:
        self.engine, self.tenant, self.horizon = engine, tenant, horizon

    @staticmethod
    def _record_key(key: Key) -> str:
        return hashlib.sha256("\x1f".join(key).encode()).hexdigest()

    async def get(self, key: Key) -> _Strikes | None:
        record = await (await self.engine.tenant(self.tenant)).get_record(COLLECTION, self._record_key(key))
        return None if record is None else _decode(record.body)

    async def update(self, key: Key, change: Change, now: float) -> None:
        store = await self.engine.tenant(self.tenant)
        record_key = self._record_key(key)
        async with store.transaction() as tx:
            found = await tx.get_record(COLLECTION, record_key)
            changed = change(None if found is None else _decode(found.body))
            if changed is None:
                if found is not None:
                    await tx.delete_record(COLLECTION, record_key)
            else:
                idle_from = max(changed.last, changed.locked_until) + self.horizon
                fields: dict[str, tuple[str, ...]] = {"idle": (_until(idle_from),)}
                await tx.put_record(Record(COLLECTION, record_key, _encode(changed), fields))
            idle = RecordQuery(COLLECTION, (FieldMatch("idle", "range", ("", _until(now))),), limit=PRUNE)
            for record in await tx.find_records(idle):
                await tx.delete_record(COLLECTION, record.key)


def _encode(strikes: _Strikes) -> bytes:
    return orjson.dumps([list(strikes.failures), strikes.lockouts, strikes.locked_until, strikes.last])


def _decode(body: bytes) -> _Strikes:
    failures, lockouts, locked_until, last = orjson.loads(body)
    return _Strikes(deque(failures), lockouts, locked_until, last)


class Lockout:
    """Failure counts and locks per (client, address) pair and per address."""

    def __init__(
        self,
        pair_limit: int = PAIR_LIMIT,
        address_limit: int = ADDRESS_LIMIT,
        window: float = WINDOW_SECONDS,
        base: float = BASE_LOCKOUT_SECONDS,
        ceiling: float = CEILING_SECONDS,
        book: StrikeBook | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.pair_limit, self.address_limit, self.window = pair_limit, address_limit, window
        self.base, self.ceiling, self.clock = base, ceiling, clock
        self.book: StrikeBook = book if book is not None else MemoryStrikes()

    @staticmethod
    def _keys(client_id: str, address: str) -> tuple[Key, ...]:
        """The pair's key and the address's; the address's only for no client id (unknown, or not identified)."""
        return (("pair", client_id, address),) * bool(client_id) + (("address", address),)

    async def retry_after(self, client_id: str, address: str) -> int | None:
        """Seconds until ``client_id`` may try again from ``address``; None when it may now."""
        now = self.clock()
        waits = [s.locked_until - now for k in self._keys(client_id, address) if (s := await self.book.get(k))]
        longest = max(waits, default=0.0)
        return int(longest) + 1 if longest > 0 else None

    async def fail(self, client_id: str, address: str) -> None:
        now = self.clock()
        if client_id:
            pair = ("pair", client_id, address)
            await self.book.update(pair, lambda found: self._strike(found, self.pair_limit, now), now)
        await self.book.update(("address", address), lambda found: self._strike(found, self.address_limit, now), now)

    async def succeed(self, client_id: str, address: str) -> None:
        pair = ("pair", client_id, address)
        if client_id and await self.book.get(pair) is not None:
            await self.book.update(pair, lambda found: None, self.clock())

    def _strike(self, strikes: _Strikes | None, limit: int, now: float) -> _Strikes:
        if strikes is None:
            strikes = _Strikes()
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
        return strikes
