"""A real ``dermbridge serve`` process on a free loopback port, for tests that need real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx2
from pydicom.dataset import Dataset

CLI_TIMEOUT_S = 300


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    base: str  # the default tenant's FHIR base, e.g. http://127.0.0.1:PORT/fhir/default
    process: subprocess.Popen[str]
    token: str = ""  # an admin access token of the default tenant (empty with admin=False)
    output: str = ""  # what the process printed, once it has stopped
    log: Path | None = None  # the file its stdout and stderr go to

    @property
    def root(self) -> str:
        return self.base.rsplit("/fhir/", 1)[0]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    @property
    def http(self) -> httpx2.Client:
        """An HTTP client that sends the admin token (closed when the server stops)."""
        if self._http is None:
            self._http = httpx2.Client(headers=self.headers, timeout=60)
        return self._http

    _http: httpx2.Client | None = None

    def retrieve(self, ds: Dataset, headers: dict[str, str] | None = None) -> httpx2.Response:
        """WADO-RS RetrieveInstance of ``ds`` (PS3.18 10.4) from the default tenant, as a multipart body."""
        instance = (f"{self.root}/dicomweb/default/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
                    f"/instances/{ds.SOPInstanceUID}")  # fmt: skip
        accept = {"Accept": 'multipart/related; type="application/dicom"'}
        return httpx2.get(instance, headers={**(headers or self.headers), **accept}, timeout=60)


def proc_stat(pid: int) -> list[str]:
    """/proc/PID/stat's fields after the command name (which may hold spaces): state is [0]."""
    return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()


def descendants(pid: int) -> list[int]:
    """The processes below ``pid``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                children.setdefault(int(proc_stat(int(entry.name))[1]), []).append(int(entry.name))
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


_PENDING = (
    "SELECT COUNT(*) FROM outbox o LEFT JOIN outbox_delivery d ON d.consumer = {c} AND d.seq = o.seq "
    "WHERE o.seq > COALESCE((SELECT acked_through FROM outbox_cursor WHERE consumer = {c}), 0) "
    "AND NOT COALESCE(d.acked, {false})"
)


def pending_events(
    data_dir: Path,
    consumers: tuple[str, ...] = ("workflow", "inference", "subscriptions"),
    tenant: str = "default",
    storage: str | None = None,
) -> int:
    """Outbox events one of ``consumers`` has not acknowledged yet (deferred retries included), read from
    the tenant's SQLite file (read only), or its PostgreSQL schema on ``storage``: the condition for
    "every consumer has handled every event"."""
    if storage:
        return asyncio.run(_pending_on_postgres(storage, tenant, consumers))
    path = data_dir / "tenants" / f"{tenant}.sqlite"
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as db:
        sql = _PENDING.format(c="?", false="0")
        return sum(db.execute(sql, (consumer, consumer)).fetchone()[0] for consumer in consumers)


async def _pending_on_postgres(storage: str, tenant: str, consumers: tuple[str, ...]) -> int:
    search_path = '"' + tenant.replace('"', '""') + '"'
    conn = await asyncpg.connect(storage, server_settings={"search_path": search_path})
    try:
        sql = _PENDING.format(c="$1", false="false")
        return sum([int(await conn.fetchval(sql, consumer)) for consumer in consumers])
    finally:
        await conn.close()


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "dermbridge", *args]
    # a bound, not a race: the CLI imports what the server does, which on a loaded 2-core machine took over 60 s
    environment = {**os.environ, **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, timeout=CLI_TIMEOUT_S, env=environment)


def create_client(
    data_dir: Path, tenant: str = "default", *roles: str, env: dict[str, str] | None = None
) -> dict[str, str]:
    """``dermbridge client create``: the new client's id and secret (``env``: e.g. DERMBRIDGE_STORAGE)."""
    role_args = [a for r in roles or ("admin",) for a in ("--role", r)]
    created = cli("client", "create", "--tenant", tenant, *role_args, "--data-dir", str(data_dir), env=env)
    assert created.returncode == 0, created.stderr
    found: dict[str, str] = json.loads(created.stdout)
    return found


def fetch_token(root: str, client: dict[str, str], scope: str | None = None) -> str:
    form = {"grant_type": "client_credentials", **({"scope": scope} if scope else {})}
    response = httpx2.post(f"{root}/auth/token", data=form, auth=(client["client_id"], client["client_secret"]))
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def _since(log: Path, offset: int) -> str:
    with log.open("rb") as file:
        file.seek(offset)
        return file.read().decode("utf-8", "replace")


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


@contextmanager
def running_server(
    data_dir: Path,
    timeout: float = 120.0,
    env: dict[str, str] | None = None,
    admin: bool = True,
    log: Path | None = None,
    role: str = "all",
) -> Iterator[Server]:
    """Start the server, wait until /metadata answers, stop it with SIGINT (Ctrl-C) at the end.

    ``timeout`` is a bound on a condition, not a race: importing torch and MONAI on a machine whose
    cores are busy has taken more than 30 s, so the default leaves room for a loaded CI machine.

    With ``admin`` an admin client is created first (``dermbridge client create``) and its token
    fetched from /auth/token. The DIMSE port is a free one unless ``env`` sets DERMBRIDGE_DICOM_PORT.

    The process writes its stdout and stderr to ``log`` (appended; default ``<data_dir>.server-<port>.log``
    beside the data directory), never to a pipe: a pipe nobody reads fills up and then blocks a server
    that logs a lot (pentest 2, finding 4), which would stall the test. ``Server.output`` is what this
    run wrote, read once the process has stopped; a failed start shows its tail.

    A ``role`` without the HTTP API (``dermbridge/roles.py``) is waited for on its /readyz instead."""
    port = free_port()
    client = create_client(data_dir, env=env) if admin else None
    command = [sys.executable, "-m", "dermbridge", "serve", "--port", str(port), "--data-dir", str(data_dir),
               "--role", role]  # fmt: skip
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", "DERMBRIDGE_DICOM_PORT": str(free_port()),
                   "DERMBRIDGE_INFERENCE_ENABLED": "false", **(env or {})}  # fmt: skip
    log = log or data_dir.with_name(f"{data_dir.name}.server-{port}.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as output:
        offset = output.tell()
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, text=True, env=environment)
    server = Server(f"http://127.0.0.1:{port}/fhir/default", process, log=log)
    ready = f"{server.base}/metadata" if role in ("all", "api") else f"{server.root}/readyz"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited ({log}):\n{_tail(_since(log, offset))}")
            try:
                if httpx2.get(ready, timeout=1).status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server did not start in {timeout} s ({log}):\n{_tail(_since(log, offset))}")
            time.sleep(0.1)
        if client is not None:
            server.token = fetch_token(server.root, client)
        yield server
    finally:
        if server._http is not None:
            server._http.close()
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        server.output = _since(log, offset)
