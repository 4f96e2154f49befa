"""HAProxy (Debian's) in front of several API processes, for the scale-out test and the engines bench.

Round robin over the backends, each health-checked on ``/readyz``
(`HAProxy configuration manual, "option httpchk" <https://docs.haproxy.org/2.6/configuration.html>`_);
the wait for it to answer is bounded, and the process is stopped by its own PID at the end.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx2

START_BOUND_S = 30.0


@dataclass(frozen=True)
class Balancer:
    url: str  # e.g. http://127.0.0.1:PORT
    pid: int


def config(port: int, backends: list[int]) -> str:
    """An HTTP load balancer on ``port`` over the API processes on ``backends``; a dead backend is taken out
    after three failed checks (500 ms apart) and a request it refused is sent to another (``redispatch``)."""
    servers = "\n".join(f"    server api{i} 127.0.0.1:{p} check" for i, p in enumerate(backends))
    return f"""global
    maxconn 256
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    retries 3
    option redispatch 1
frontend fhir
    bind 127.0.0.1:{port}
    default_backend api
backend api
    balance roundrobin
    option httpchk GET /readyz
    timeout check 5s
    default-server inter 500ms fall 3 rise 2
{servers}
"""


@contextmanager
def haproxy(directory: Path, port: int, backends: list[int]) -> Iterator[Balancer]:
    """HAProxy on ``port``, round robin over ``backends``; running once the default tenant's metadata answers
    through it."""
    path = directory / f"haproxy-{port}.cfg"
    path.write_text(config(port, backends))
    log = directory / f"haproxy-{port}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(["haproxy", "-db", "-f", str(path)], stdout=output, stderr=subprocess.STDOUT)
    balancer = Balancer(f"http://127.0.0.1:{port}", process.pid)
    try:
        deadline = time.monotonic() + START_BOUND_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"HAProxy exited: {log.read_text()}")
            try:
                if httpx2.get(f"{balancer.url}/fhir/default/metadata", timeout=2).status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"HAProxy did not answer in {START_BOUND_S} s")
            time.sleep(0.1)
        yield balancer
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
