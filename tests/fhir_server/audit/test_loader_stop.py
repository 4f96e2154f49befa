"""Stopping the audit loader process is bounded: the API's shutdown never waits on it forever.

The loaders here are real processes that misbehave as a stuck loader would (they never read their
stdin, so the API's notices fill the pipe); the real loader's guarantees (nothing staged is lost
when it is killed) are in ``test_audit_loader``."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from fhir_server.audit.remote import LoaderProcess
from tests.conftest import make_client

# Never reads its stdin; a grandchild keeps the read end of that pipe open after it is gone, as
# anything holding a copy of the descriptor would (the grandchild ends by itself after 120 s).
STUCK_LOADER = """
import subprocess, sys, time
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], stdin=sys.stdin)
open(sys.argv[1], "w").write(str(grandchild.pid))
time.sleep(120)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def stop_a_stuck_loader(tmp_path: Path, *, ignore_term: bool) -> tuple[float, LoaderProcess]:
    pid_file = tmp_path / "grandchild.pid"
    script = STUCK_LOADER
    if ignore_term:
        script = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" + script
    loader = LoaderProcess(
        [sys.executable, "-c", script, str(pid_file)], {"init": True}, close_timeout=1.0, stop_timeout=5.0
    )
    await loader.start()
    try:
        deadline = time.monotonic() + 60
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline, "the stuck loader did not start"
            await asyncio.sleep(0.05)
        for n in range(4000):  # ~150 KiB of notices: more than a pipe holds
            loader._send(f"tenant-{n:06d}-{'x' * 16}")
        started = time.monotonic()
        await asyncio.wait_for(loader.close(), 60)  # the old close() waited here forever
        return time.monotonic() - started, loader
    finally:
        if pid_file.exists() and pid_file.read_text():
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_a_loader_that_never_finishes_is_terminated(tmp_path: Path) -> None:
    took, loader = asyncio.run(stop_a_stuck_loader(tmp_path, ignore_term=False))
    assert took < 30 and not loader.alive


def test_a_loader_that_ignores_terminate_is_killed(tmp_path: Path) -> None:
    took, loader = asyncio.run(stop_a_stuck_loader(tmp_path, ignore_term=True))
    assert took < 30 and not loader.alive


def test_a_failed_start_leaves_no_loader_behind(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        client = make_client(tmp_path / "var", dicom_port=taken.getsockname()[1], audit_loader="process")
        with pytest.raises(OSError), client:
            pass  # the DIMSE listener cannot bind: the app does not start
    loader = client.app.state.audit.loader  # type: ignore[attr-defined]
    assert loader is not None and not loader.alive
    assert loader.pid is None  # stopped and reaped, not left running on a pipe nobody closes
