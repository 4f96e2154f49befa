"""A real ``dermbridge serve`` process on a free loopback port, for tests that need real sockets."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_server(
    data_dir: Path, timeout: float = 30.0, env: dict[str, str] | None = None
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """Start the server, wait until /metadata answers, stop it with SIGINT (Ctrl-C) at the end.

    The DIMSE port is a free one unless ``env`` sets DERMBRIDGE_DICOM_PORT."""
    port = free_port()
    command = [sys.executable, "-m", "dermbridge", "serve", "--port", str(port), "--data-dir", str(data_dir)]
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", "DERMBRIDGE_DICOM_PORT": str(free_port()), **(env or {})}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment)
    base = f"http://127.0.0.1:{port}/fhir/default"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited: {process.stdout.read() if process.stdout else ''}")
            try:
                if httpx2.get(f"{base}/metadata", timeout=1).status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the server did not start")
            time.sleep(0.1)
        yield base, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout:
            process.stdout.close()
