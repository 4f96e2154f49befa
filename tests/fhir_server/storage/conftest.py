"""Engines under contract: SQLite, and PostgreSQL on a throw-away server (tests/postgres.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from fhir_server.storage.port import Engine
from fhir_server.storage.postgres import PostgresEngine
from fhir_server.storage.sqlite import SqliteEngine


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite", "postgresql"])
def engine_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Engine]:
    """Makes engines over the same storage (so that reopening can be tested): a test's own database."""
    if request.param == "sqlite":
        return lambda: SqliteEngine(tmp_path / "var")
    dsn = request.getfixturevalue("postgres_server").create_database()
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
