"""A server's process tree from /proc (Linux): its children (the audit loader), the CPU they have
used, a crash of all of them at one instant, and waiting until they are idle."""

from __future__ import annotations

import contextlib
import os
import resource
import time

from tests.server import crash, descendants, proc_stat

__all__ = ["CLIENT", "cpu_by_group", "cpu_seconds", "crash", "descendants", "settle"]
TICKS = os.sysconf("SC_CLK_TCK")
CLIENT = "client"  # the group name of this process (the bench's own HTTP clients) in ``cpu_by_group``


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU used so far by ``pids`` and their children: the live ones' own (utime, stime), and
    what each has collected from children that ended (cutime, cstime; proc(5)), such as PostgreSQL backends
    whose connection closed."""
    total = 0
    for pid in {p for root in pids for p in (root, *descendants(root))}:
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = proc_stat(pid)
            total += sum(int(field) for field in fields[11:15])  # utime, stime, cutime, cstime
    return total / TICKS


def cpu_by_group(groups: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds so far of each named group of process trees, and of this process as ``CLIENT`` (its own
    threads only: its children are the servers, counted in their groups)."""
    used = {name: cpu_seconds(pids) for name, pids in groups.items()}
    own = resource.getrusage(resource.RUSAGE_SELF)
    used[CLIENT] = own.ru_utime + own.ru_stime
    return used


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
