"""``dermbridge notify show|set FILE|reset``: a tenant's notification settings (SMTP, templates,
suppression, preferences; ``fhir_server.notify.config``), kept in its database: no restart."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pydantic import ValidationError

from dermbridge.cli_settings import _on_tenant
from dermbridge.cli_support import settings_from
from fhir_server.notify.config import SETTING, NotifyConfig, set_tenant_notifications, tenant_notifications
from fhir_server.storage.port import TenantStore
from fhir_server.tenant_settings import SOFTWARE_CONFIGURATION


def notify_command(args: argparse.Namespace) -> int:
    value = None
    if args.action == "set":
        if args.file is None:
            print("usage: dermbridge notify set FILE.json", file=sys.stderr)
            return 2
        try:
            value = json.loads(args.file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            print(f"cannot read {args.file}: {exc}", file=sys.stderr)
            return 2

    fallback = NotifyConfig.load(settings_from(args).notify_config)

    async def act(store: TenantStore) -> list[str]:
        if args.action != "show":
            await set_tenant_notifications(store, value)
        current = await tenant_notifications(store, store.name, fallback)
        return [current.model_dump_json(indent=2)]

    try:
        return _on_tenant(args, act, None if args.action == "show" else (SETTING, SOFTWARE_CONFIGURATION))
    except ValidationError as exc:
        print(f"invalid notification settings: {exc}", file=sys.stderr)
        return 2


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    notify = commands.add_parser("notify", help="a tenant's email/webhook settings, templates and suppressions")
    notify.add_argument("action", choices=["show", "set", "reset"])
    notify.add_argument("file", nargs="?", type=Path, help="set: a JSON file with the tenant's settings")
    notify.add_argument("--tenant", default="default")
    notify.add_argument("--data-dir", type=Path)
    notify.set_defaults(func=notify_command)
