"""Group commit: concurrent callers' items written by one transaction, one WAL flush for all."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class GroupCommit(Generic[T]):
    """``add`` returns once ``write`` has committed the item with whatever else was waiting (or raises
    its error). One group is written at a time; items arriving meanwhile form the next group."""

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
            if not group:
                return
            try:
                await self._write([item for item, _ in group])
            except BaseException as exc:
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
                return
            for _, future in group:
                if not future.done():
                    future.set_result(None)
