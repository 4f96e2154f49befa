"""``dermbridge storage migrate|copy``: bring the engine's schema up to date, or move tenants to another engine."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from dermbridge.cli_support import settings_from
from dermbridge.settings import Settings
from dermbridge.storage import EngineUnavailable, encrypted, open_audit_trail, open_blobs, plain_engine
from dermbridge.storage_copy import CopyRefused, Sides, copy_blobs, copy_tenant
from dermbridge.storage_url import BlobUrl, StorageUrl, parse_blob_url, parse_storage_url
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


def _copy(settings: Settings, source: StorageUrl, target: StorageUrl, tenants: list[str] | None,
          target_blobs: BlobUrl) -> int:  # fmt: skip
    if source.url == target.url or (source.path is not None and source.path == target.path):
        print("storage copy: --from and --to name the same storage", file=sys.stderr)
        return 2
    trail = open_audit_trail(settings)
    base = settings.base_url()
    source_blobs = settings.blob_url(source)
    blobs = None if source_blobs == target_blobs else (open_blobs(source_blobs), open_blobs(target_blobs))

    async def run() -> int:
        sides = [
            Sides(plain, encrypted(plain, settings)) for plain in (plain_engine(u, settings) for u in (source, target))
        ]
        for side in sides:
            await side.readable.open()
        for store in blobs or ():
            await store.open()
        try:
            await migrate(sides[1].plain)
            names = tenants or await sides[0].plain.tenant_names()
            for name in names:
                counted = await copy_tenant(name, sides[0], sides[1], trail, lambda t: f"{base}/fhir/{t}")
                print(f"tenant {name}: {counted.versions} resource versions, {sum(counted.records.values())} records, "
                      f"{counted.links} audit events, {counted.checkpoints} signed heads copied; the audit trail "
                      "verifies on arrival")  # fmt: skip
                if blobs is not None:
                    print(f"tenant {name}: {await copy_blobs(name, *blobs)} DICOM objects copied")
        except CopyRefused as refused:
            print(f"storage copy: {refused}", file=sys.stderr)
            return 1
        finally:
            for store in blobs or ():
                await store.close()
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
        target = parse_storage_url(args.target)
        target_blobs = parse_blob_url(args.target_blobs, target) if args.target_blobs else settings.blob_url(target)
        return _copy(settings, source, target, args.tenant, target_blobs)
    except (ValueError, EngineUnavailable) as exc:
        print(f"storage {args.action}: {exc}", file=sys.stderr)
        return 2


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    storage = commands.add_parser("storage", help="migrate the engine's schema, or copy tenants to another engine")
    storage.add_argument("action", choices=["migrate", "copy"])
    storage.add_argument("--from", dest="source", help="copy: sqlite:///DIR or postgresql://... (default: STORAGE)")
    storage.add_argument("--to", dest="target", help="copy: the engine to copy into (its tenants must be new)")
    storage.add_argument(
        "--to-blobs",
        dest="target_blobs",
        help="copy: where the target keeps the DICOM objects, file:///DIR or postgresql (the --to "
        "database; default: the BLOBS setting); objects are copied when it differs from the source's",
    )
    storage.add_argument("--tenant", action="append", help="copy: only this tenant (repeatable; default: all)")
    storage.add_argument("--data-dir", type=Path, help="where the keys, blobs and audit anchors are")
    storage.set_defaults(func=storage_command)
