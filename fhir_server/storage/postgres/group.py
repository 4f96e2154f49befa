"""Group commit: concurrent callers' items written by one transaction, one WAL flush for all."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import asyncpg

T = TypeVar("T")

# the server or the link failed, not an item: SQLSTATE classes 08 (connection) and 57 (operator intervention)
_OUTAGE = (asyncpg.PostgresConnectionError, asyncpg.OperatorInterventionError)


def _an_item_may_be_at_fault(exc: Exception) -> bool:
    """An error the server raised about the statements (data, constraint, limit), not an outage: a lost
    connection, a pool wait that timed out or a server shutting down would fail each item alike, N times
    over while later groups queue behind it."""
    return isinstance(exc, asyncpg.PostgresError) and not isinstance(exc, _OUTAGE)


class GroupCommit(Generic[T]):
    """``add`` returns once ``write`` has committed the item with whatever else was waiting (or raises
    its own error). One group is written at a time; items arriving meanwhile form the next group."""

    def __init__(self, write: Callable[[list[T]], Awaitable[None]]) -> None:
        self._write = write
        self._waiting: list[tuple[T, asyncio.Future[None]]] = []
        self._writing = asyncio.Lock()
        self._leaders: set[asyncio.Future[None]] = set()  # referenced until done: a bare task may be collected

    async def add(self, item: T) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if len(self._waiting) == 1:
            leader = asyncio.ensure_future(self._lead())
            self._leaders.add(leader)
            leader.add_done_callback(self._leaders.discard)
        await future

    async def _lead(self) -> None:
        async with self._writing:
            group, self._waiting = self._waiting, []
            if group:
                await self._commit(group)

    async def _commit(self, group: list[tuple[T, asyncio.Future[None]]]) -> None:
        """The group in one transaction; when the server refuses it, each item in its own, so that one bad item
        fails alone (as a savepoint per unit does in the SQLite engine's group commit). Any other error (an
        outage) settles the whole group with it."""
        try:
            await self._write([item for item, _ in group])
        except Exception as exc:
            if len(group) > 1 and _an_item_may_be_at_fault(exc):
                for unit in group:
                    await self._commit([unit])
                return
            _settle(group, exc)
        except BaseException as exc:
            _settle(group, exc)
            raise
        else:
            _settle(group, None)


def _settle(group: list[tuple[T, asyncio.Future[None]]], error: BaseException | None) -> None:
    for _, future in group:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
