"""A server's process tree from /proc (Linux): its children (the audit loader), the CPU they have
used, a crash of all of them at one instant, and waiting until they are idle."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat's fields after the command name (which may hold spaces): state is [0]."""
    return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()


def descendants(pid: int) -> list[int]:
    """The processes below ``pid``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                children.setdefault(int(_stat(int(entry.name))[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def crash(pid: int) -> int:
    """Freeze ``pid`` and its children, then SIGKILL them all: none outlives another to tidy up
    (the audit loader would otherwise load what is staged when the API's pipe closes)."""
    frozen = [pid, *descendants(pid)]
    for each in frozen:
        with contextlib.suppress(ProcessLookupError):
            os.kill(each, signal.SIGSTOP)
    for each in {*frozen, *descendants(pid)}:
        with contextlib.suppress(ProcessLookupError):
            os.kill(each, signal.SIGKILL)
    return len(frozen)


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU used so far by ``pids`` and their children."""
    total = 0
    for pid in {p for root in pids for p in (root, *descendants(root))}:
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = _stat(pid)
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
