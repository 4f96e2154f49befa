"""A background round every few seconds inside a server process (the staged-audit sweep, the lapsed-claim
sweep, the retention schedule): the first round one interval after start, never cancelled midway (a stop waits
for the round's transaction), and a failed round (a database blip included) is logged and retried at the next
one: it never ends the loop, so ``running`` stays true for ``/readyz``."""

from __future__ import annotations

import asyncio
import contextlib
import logging

log = logging.getLogger(__name__)


class Periodic:
    """Subclasses give ``run`` (one round) and ``name``."""

    name = "periodic round"

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run(self) -> object:
        raise NotImplementedError

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await asyncio.shield(self.run())
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s failed; the next round retries", self.name)
