"""What the ``dermbridge`` sub-commands share: settings from flags, an opened engine."""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from dermbridge.settings import Settings
from dermbridge.storage import open_engine
from fhir_server.storage.port import Engine, TenantStore, TenantUnknownError


def settings_from(args: argparse.Namespace) -> Settings:
    overrides = {
        k: v
        for k, v in (
            ("host", getattr(args, "host", None)),
            ("port", getattr(args, "port", None)),
            ("data_dir", getattr(args, "data_dir", None)),
            ("role", getattr(args, "serve_role", None)),
        )
        if v is not None
    }
    return Settings(**overrides)


@asynccontextmanager
async def opened_engine(settings: Settings) -> AsyncIterator[Engine]:
    engine = open_engine(settings)
    await engine.open()
    try:
        yield engine
    finally:
        await engine.close()


async def tenant_or_none(engine: Engine, name: str) -> TenantStore | None:
    """The tenant's store, or None after saying on stderr that there is no such tenant."""
    try:
        return await engine.tenant(name)
    except TenantUnknownError:
        print(f"no tenant {name!r}", file=sys.stderr)
        return None
