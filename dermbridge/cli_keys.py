"""``dermbridge keys rotate-master|rotate-tenant``: key rotation without re-encrypting any data."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from dermbridge.cli_support import opened_engine, settings_from
from fhir_server.crypto.master import new_master_file
from fhir_server.crypto.store import EncryptingEngine
from fhir_server.storage.port import TenantUnknownError


def keys_command(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if not settings.encryption_enabled:
        print("encryption is off (DERMBRIDGE_ENCRYPTION_ENABLED=false): there are no keys to rotate", file=sys.stderr)
        return 2
    if args.action == "rotate-master":
        if settings.master_key:
            print("the master key comes from DERMBRIDGE_MASTER_KEY: rotate it there", file=sys.stderr)
            return 2
        path = new_master_file(settings.data_dir / "keys", args.kind)
        print(f"new master key {path.name}")

    async def run() -> int:
        async with opened_engine(settings) as engine:
            assert isinstance(engine, EncryptingEngine)
            if args.action == "rotate-master":
                for name in await engine.tenant_names():
                    count = await (await engine.tenant(name)).rewrap_tenant_keys()
                    print(f"tenant {name}: {count} tenant key(s) re-wrapped under {engine.masters.current.key_id}")
                print("older master key files can be removed once every process runs with the new one")
                return 0
            try:
                store = await engine.tenant(args.tenant)
            except TenantUnknownError:
                print(f"no tenant {args.tenant!r}", file=sys.stderr)
                return 2
            version = await store.rotate_tenant_key()
            print(f"tenant {args.tenant}: tenant key version {version}; every data key re-wrapped under it")
            return 0

    return asyncio.run(run())


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = commands.add_parser("keys", help="rotate the master key or a tenant key")
    keys.add_argument("action", choices=["rotate-master", "rotate-tenant"])
    keys.add_argument("--kind", choices=["aes", "hybrid"], default="aes", help="rotate-master: the new key's kind")
    keys.add_argument("--tenant", default="default")
    keys.add_argument("--data-dir", type=Path)
    keys.set_defaults(func=keys_command)
