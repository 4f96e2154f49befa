"""A server's process tree from /proc (Linux): its children (the audit loader), the CPU they have
used, a crash of all of them at one instant, and waiting until they are idle."""

from __future__ import annotations

import contextlib
import os
import time

from tests.server import crash, descendants, proc_stat

__all__ = ["cpu_seconds", "crash", "descendants", "settle"]
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU used so far by ``pids`` and their children."""
    total = 0
    for pid in {p for root in pids for p in (root, *descendants(root))}:
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = proc_stat(pid)
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def settle(pids: list[int], idle_share: float = 0.05, window_s: float = 1.0, limit_s: float = 120.0) -> float:
    """Wait until ``pids`` (with children) use under ``idle_share`` of a core over ``window_s``
    (audit loaders still loading the last phase's events, for instance); at most ``limit_s``.
    Returns the seconds waited."""
    started = time.monotonic()
    used = cpu_seconds(pids)
    while time.monotonic() - started < limit_s:
        time.sleep(window_s)
        now = cpu_seconds(pids)
        if now - used < idle_share * window_s:
            break
        used = now
    return time.monotonic() - started
