"""What the ``dermbridge`` sub-commands share: settings from flags, an opened engine."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from dermbridge.settings import Settings
from dermbridge.storage import open_audit_trail, open_engine
from fhir_server.audit.trail import AuditTrail
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


def run_on_tenant(args: argparse.Namespace, act: Callable[[TenantStore, AuditTrail | None], Awaitable[int]]) -> int:
    """``act`` on the tenant ``args.tenant`` names, with the audit trail when auditing is on (closed
    after); exit status 2 when there is no such tenant."""
    settings = settings_from(args)
    trail = open_audit_trail(settings) if settings.audit_enabled else None

    async def run() -> int:
        async with opened_engine(settings) as engine:
            store = await tenant_or_none(engine, args.tenant)
            if store is None:
                return 2
            try:
                return await act(store, trail)
            finally:
                if trail is not None:
                    await trail.close()

    return asyncio.run(run())
