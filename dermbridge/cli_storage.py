"""``dermbridge storage migrate|copy``: bring the engine's schema up to date, or move tenants to another engine."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from dermbridge.cli_support import settings_from
from dermbridge.settings import Settings
from dermbridge.storage import EngineUnavailable, encrypted, open_audit_trail, plain_engine
from dermbridge.storage_copy import CopyRefused, Sides, copy_tenant
from dermbridge.storage_url import StorageUrl, parse_storage_url
from fhir_server.storage.port import Engine


async def migrate(engine: Engine) -> str:
    """The engine's own migration step (``MigratingEngine.migrate``); SQLite brings each tenant file up to
    date as it opens it."""
    step = getattr(engine, "migrate", None)
    if step is not None:
        await step()
        return "schema up to date"
    names = await engine.tenant_names()
    for name in names:
        await engine.tenant(name)
    return f"{len(names)} tenant database(s) up to date"


def _migrate(settings: Settings) -> int:
    url = settings.storage_url()

    async def run() -> int:
        engine = plain_engine(url, settings)
        await engine.open()
        try:
            print(f"storage {url.shown()}: {await migrate(engine)}")
        finally:
            await engine.close()
        return 0

    return asyncio.run(run())


def _copy(settings: Settings, source: StorageUrl, target: StorageUrl, tenants: list[str] | None) -> int:
    if source.url == target.url or (source.path is not None and source.path == target.path):
        print("storage copy: --from and --to name the same storage", file=sys.stderr)
        return 2
    trail = open_audit_trail(settings)
    base = settings.base_url()

    async def run() -> int:
        sides = [
            Sides(plain, encrypted(plain, settings)) for plain in (plain_engine(u, settings) for u in (source, target))
        ]
        for side in sides:
            await side.readable.open()
        try:
            await migrate(sides[1].plain)
            names = tenants or await sides[0].plain.tenant_names()
            for name in names:
                counted = await copy_tenant(name, sides[0], sides[1], trail, lambda t: f"{base}/fhir/{t}")
                print(f"tenant {name}: {counted.versions} resource versions, {sum(counted.records.values())} records, "
                      f"{counted.links} audit events, {counted.checkpoints} signed heads copied; the audit trail "
                      "verifies on arrival")  # fmt: skip
        except CopyRefused as refused:
            print(f"storage copy: {refused}", file=sys.stderr)
            return 1
        finally:
            for side in sides:
                await side.readable.close()
        return 0

    return asyncio.run(run())


def storage_command(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    try:
        if args.action == "migrate":
            return _migrate(settings)
        if not args.target:
            print("storage copy needs --to URL", file=sys.stderr)
            return 2
        source = parse_storage_url(args.source) if args.source else settings.storage_url()
        return _copy(settings, source, parse_storage_url(args.target), args.tenant)
    except (ValueError, EngineUnavailable) as exc:
        print(f"storage {args.action}: {exc}", file=sys.stderr)
        return 2


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    storage = commands.add_parser("storage", help="migrate the engine's schema, or copy tenants to another engine")
    storage.add_argument("action", choices=["migrate", "copy"])
    storage.add_argument("--from", dest="source", help="copy: sqlite:///DIR or postgresql://... (default: STORAGE)")
    storage.add_argument("--to", dest="target", help="copy: the engine to copy into (its tenants must be new)")
    storage.add_argument("--tenant", action="append", help="copy: only this tenant (repeatable; default: all)")
    storage.add_argument("--data-dir", type=Path, help="where the keys, blobs and audit anchors are")
    storage.set_defaults(func=storage_command)
