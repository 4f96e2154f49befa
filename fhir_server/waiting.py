"""Waits with a bound that never swallow a cancellation.

On Python 3.11, ``asyncio.wait_for`` returns the awaited result when the task is cancelled in the
same loop iteration as that result arrives (CPython gh-86296, fixed in 3.12): the cancellation is
lost. A background loop that waits on a wake-up event that way (an engine commit sets it from
another thread) then never stops, and the shutdown awaiting it stalls forever. ``asyncio.timeout``
counts cancellations (``Task.uncancel``) and has no such window."""

from __future__ import annotations

import asyncio


async def woken(event: asyncio.Event, seconds: float) -> bool:
    """Wait until ``event`` is set or ``seconds`` pass; whether it was set."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True
