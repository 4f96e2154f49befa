"""A throw-away Citus cluster for the tests: a coordinator and one worker, each a ``tests.postgres`` server with
``shared_preload_libraries=citus`` (https://docs.citusdata.com/en/stable/installation/multi_node.html).

Debian has no Citus package: the extension must have been built and installed into the PostgreSQL the tests use
(README, "Citus"); ``citus_available`` says whether it is, and the Citus tests are skipped with that reason
otherwise. Each database is made on both nodes under one name, with the extension, the worker registered and
schema-based sharding on (``citus.enable_schema_based_sharding``): every schema created in it, a DermBridge
tenant's included, becomes a distributed schema (its tables one colocated shard group on some node).
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from tests.postgres import BIN_DIR, SUPERUSER, ThrowawayPostgres, throwaway_postgres


def citus_available() -> str | None:
    """None when the ``citus`` extension is installed in the tests' PostgreSQL; else why not."""
    found = subprocess.run([str(BIN_DIR / "pg_config"), "--pkglibdir", "--sharedir"], capture_output=True, text=True,
                           check=False, timeout=30)  # fmt: skip
    if found.returncode != 0:
        return f"{BIN_DIR / 'pg_config'} failed: {found.stderr.strip()}"
    lib, share = found.stdout.split()
    if not (Path(lib) / "citus.so").exists() or not (Path(share) / "extension" / "citus.control").exists():
        return f"Citus is not installed in {lib} (Debian has no package: build it from source, README 'Citus')"
    return None


class CitusCluster:
    def __init__(self, coordinator: ThrowawayPostgres, worker: ThrowawayPostgres) -> None:
        self.coordinator, self.worker = coordinator, worker

    def _sql(self, server: ThrowawayPostgres, database: str, *statements: str) -> None:
        for statement in statements:
            server._run(BIN_DIR / "psql", "-h", "127.0.0.1", "-p", str(server.port), "-U", SUPERUSER, "-d", database,
                        "-v", "ON_ERROR_STOP=1", "-qc", statement, timeout=120)  # fmt: skip

    def create_database(self) -> str:
        """A database of the test's own on both nodes, distributed; returns the coordinator's DSN."""
        name = f"citus_{uuid.uuid4().hex[:12]}"
        for server in (self.coordinator, self.worker):
            server.create_database(name)
            self._sql(server, name, "CREATE EXTENSION citus")
        self._sql(self.coordinator, name,
                  f"SELECT citus_set_coordinator_host('127.0.0.1', {self.coordinator.port})",
                  f"SELECT citus_add_node('127.0.0.1', {self.worker.port})",
                  f'ALTER DATABASE "{name}" SET citus.enable_schema_based_sharding = on')  # fmt: skip
        return self.coordinator.dsn(name)


@contextmanager
def citus_cluster() -> Iterator[CitusCluster]:
    with ExitStack() as stack:
        coordinator = stack.enter_context(throwaway_postgres(preload="citus"))
        worker = stack.enter_context(throwaway_postgres(preload="citus"))
        yield CitusCluster(coordinator, worker)
