"""``dermbridge terminology load FILE``: a tenant's own CodeSystems, ValueSets and ConceptMaps from a FHIR
package (``package.tgz``), a Bundle or one resource's JSON. Each is written as an ordinary resource
(conditional update on ``url`` and ``version``, so loading a package again replaces what it loaded);
the licence of what is loaded is the user's."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from dermbridge.cli_support import run_on_tenant
from fhir_server.audit.trail import AuditTrail
from fhir_server.errors import OperationOutcomeError
from fhir_server.repository import Repository
from fhir_server.search.escaping import escape
from fhir_server.storage.port import TenantStore
from fhir_server.tenant_settings import SOFTWARE_CONFIGURATION, setting_event
from terminology.errors import TerminologyError
from terminology.package import read_terminology


def terminology_command(args: argparse.Namespace) -> int:
    try:
        resources = read_terminology(args.file)
    except (TerminologyError, OSError) as exc:
        print(f"{args.file}: {exc}", file=sys.stderr)
        return 2

    async def act(store: TenantStore, trail: AuditTrail | None) -> int:
        loaded, failed = await load(Repository.system(store, reason="dermbridge terminology CLI"), resources)
        summary = ", ".join(f"{n} {t}" for t, n in sorted(loaded.items())) or "nothing"
        print(f"{args.tenant}: loaded {summary} from {args.file.name}" + (f"; {failed} refused" if failed else ""))
        if loaded and trail is not None:
            change = f"loaded {summary} from {args.file.name}"
            await trail.record(store, setting_event("terminology", SOFTWARE_CONFIGURATION, "dermbridge CLI", change))
        return 1 if failed else 0

    return run_on_tenant(args, act)


async def load(repo: Repository, resources: list[dict[str, Any]]) -> tuple[Counter[str], int]:
    """Write each resource; one refused (e.g. invalid, or too large) is reported and the others go on."""
    loaded: Counter[str] = Counter()
    failed = 0
    for resource in resources:
        kind, url = resource["resourceType"], resource.get("url")
        if not isinstance(url, str):
            print(f"{kind}/{resource.get('id', '?')}: no url, skipped", file=sys.stderr)
            failed += 1
            continue
        version = resource.get("version")
        criteria = {"url": escape(url)} | ({"version": escape(version)} if isinstance(version, str) else {})
        body = {k: v for k, v in resource.items() if k not in ("id", "meta", "text")}
        try:
            await repo.conditional_update(body, resource_type=kind, criteria=urlencode(criteria))
        except OperationOutcomeError as exc:
            print(f"{kind} {url}: {exc.outcome['issue'][0].get('diagnostics', 'refused')}", file=sys.stderr)
            failed += 1
            continue
        loaded[kind] += 1
    return loaded, failed


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    terminology = commands.add_parser("terminology", help="load a tenant's own code systems, value sets, maps")
    terminology.add_argument("action", choices=["load"])
    terminology.add_argument("file", type=Path, help="a FHIR package (.tgz), a Bundle or a resource (.json)")
    terminology.add_argument("--tenant", default="default")
    terminology.add_argument("--data-dir", type=Path)
    terminology.set_defaults(func=terminology_command)
