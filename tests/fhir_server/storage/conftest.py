"""Engines under contract: SQLite, PostgreSQL on a throw-away server (tests/postgres.py), and PostgreSQL as a
Citus cluster with schema-based sharding (tests/citus.py; skipped, saying why, where Citus is not installed)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from fhir_server.storage.port import Engine
from fhir_server.storage.postgres import PostgresEngine
from fhir_server.storage.sqlite import SqliteEngine
from tests.citus import CitusCluster, citus_available, citus_cluster


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def citus() -> Iterator[CitusCluster]:
    """A coordinator and a worker for the session, when Citus is installed."""
    missing = citus_available()
    if missing is not None:
        pytest.skip(missing)
    with citus_cluster() as cluster:
        yield cluster


@pytest.fixture(params=["sqlite", "postgresql", "citus"])
def engine_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Engine]:
    """Makes engines over the same storage (so that reopening can be tested): a test's own database."""
    if request.param == "sqlite":
        return lambda: SqliteEngine(tmp_path / "var")
    server = request.getfixturevalue("citus" if request.param == "citus" else "postgres_server")
    dsn = server.create_database()
    return lambda: PostgresEngine(dsn)


@pytest.fixture
async def engine(engine_factory: Callable[[], Engine]) -> AsyncIterator[Engine]:
    engine = engine_factory()
    await engine.open()
    await engine.create_tenant("alpha")
    await engine.create_tenant("beta")
    try:
        yield engine
    finally:
        await engine.close()
