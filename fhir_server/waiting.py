"""Waiting with a bound, without losing a cancellation.

On Python 3.11, ``asyncio.wait_for`` swallows a cancellation that arrives in the same loop iteration
as the awaited result: it returns the result instead of raising (CPython gh-86296, fixed in 3.12 by
re-implementing it on ``asyncio.timeout``). A background loop waiting that way on its wake-up event,
cancelled by a shutdown just as a commit woke it, carried on forever, and the shutdown waited for
it: the test suite's rare stalls. Bounded waits here use ``asyncio.timeout``, which keeps an outside
cancellation (it counts them).
"""

from __future__ import annotations

import asyncio
import contextlib


async def woken(event: asyncio.Event, seconds: float) -> bool:
    """Waits until ``event`` is set or ``seconds`` have passed; True if it is set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
    return event.is_set()
