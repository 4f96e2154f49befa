"""Engines under contract: SQLite always; MongoDB only where DERMBRIDGE_TEST_MONGODB_URI points at a server."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from fhir_server.storage.port import Engine
from fhir_server.storage.sqlite import SqliteEngine

MONGODB_URI = os.environ.get("DERMBRIDGE_TEST_MONGODB_URI")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _engines() -> list[str]:
    return ["sqlite", "mongodb"]


@pytest.fixture(params=_engines())
def engine_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Engine]:
    """Makes engines over the same storage (so that reopening can be tested)."""
    if request.param == "sqlite":
        return lambda: SqliteEngine(tmp_path / "var")
    if not MONGODB_URI:
        pytest.skip("MongoDB rows: DERMBRIDGE_TEST_MONGODB_URI is not set (no MongoDB server here)")
    try:
        from fhir_server.storage.mongo import MongoEngine  # type: ignore[import-not-found]
    except ImportError:
        pytest.fail("DERMBRIDGE_TEST_MONGODB_URI is set but the MongoDB engine is not written yet")

    prefix = f"dbtest{uuid.uuid4().hex[:8]}"
    return lambda: MongoEngine(MONGODB_URI, database_prefix=prefix)


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
