"""A throw-away PostgreSQL server for the tests, from Debian's binaries (``make system-deps``).

``initdb`` refuses to run as root, so as root the cluster belongs to the ``postgres`` user (``runuser``);
otherwise to the current user. Its data directory and unix socket live in a temporary directory; it
listens on a free loopback port; every wait is bounded (``pg_ctl -w -t``). Missing binaries fail the
tests loudly: the PostgreSQL rows of the engine contract are not optional.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BIN_DIR = Path(os.environ.get("DERMBRIDGE_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
START_TIMEOUT_S = 60
SUPERUSER = "postgres"


class PostgresUnavailableError(RuntimeError):
    """The PostgreSQL binaries are missing or the server would not start."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ThrowawayPostgres:
    """One cluster in a temporary directory; ``dsn(database)`` names a database on it."""

    def __init__(self, preload: str = "") -> None:
        for program in ("initdb", "pg_ctl", "postgres"):
            if not (BIN_DIR / program).exists():
                raise PostgresUnavailableError(f"{BIN_DIR / program} is missing: run `make system-deps`")
        self._as_root = os.geteuid() == 0
        # as root, under /tmp: the postgres user must reach it, and a TMPDIR under /root it could not
        self.root = Path(tempfile.mkdtemp(prefix="dermbridge-pg-", dir="/tmp" if self._as_root else None))
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.port = _free_port()
        self.preload = preload  # shared_preload_libraries, e.g. "citus"

    def _run(self, *args: str | Path, timeout: float) -> None:
        command = [str(a) for a in args]
        if self._as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if result.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise PostgresUnavailableError(f"{' '.join(command)} failed: {result.stderr.strip()}\n{tail}")

    def start(self) -> None:
        self.sockets.mkdir()
        if self._as_root:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.sockets, "postgres", "postgres")
        self._run(BIN_DIR / "initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8",
                  "--no-locale", "--no-sync", timeout=120)  # fmt: skip
        # fsync off: a test cluster dies with its tests; the engine's own setting (synchronous_commit) is unchanged
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.sockets} -c fsync=off "
                   "-c full_page_writes=off -c max_connections=200")  # fmt: skip
        if self.preload:
            options += f" -c shared_preload_libraries={self.preload}"
        self._run(BIN_DIR / "pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-o", options,
                  "-w", "-t", str(START_TIMEOUT_S), "start", timeout=START_TIMEOUT_S + 10)  # fmt: skip

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run(BIN_DIR / "pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop", timeout=40)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def postmaster_pid(self) -> int:
        """The server's main process (the first line of ``postmaster.pid``); every backend is its child."""
        return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str = "") -> str:
        """A fresh, empty database (a test's own; ``name`` default: a new one); returns its DSN."""
        name = name or f"test_{uuid.uuid4().hex[:12]}"
        self._run(BIN_DIR / "psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, "-d", "postgres",
                  "-v", "ON_ERROR_STOP=1", "-qc", f'CREATE DATABASE "{name}"', timeout=60)  # fmt: skip
        return self.dsn(name)


@contextmanager
def throwaway_postgres(preload: str = "") -> Iterator[ThrowawayPostgres]:
    """Started on entry, stopped and removed on exit (also when the start failed half-way)."""
    server = ThrowawayPostgres(preload)
    try:
        server.start()
        yield server
    finally:
        server.stop()
