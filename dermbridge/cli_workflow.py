"""``dermbridge workflow list|show|import|activate|retire``: a tenant's workflow definitions (PlanDefinitions,
``fhir_server.workflow``). Changes apply to the next event of a running server: no restart."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from dermbridge.cli_support import opened_engine, settings_from, tenant_or_none
from dermbridge.storage import open_audit_trail
from dicom_node.case_product import is_keyword
from fhir_server.api.messages import FhirRequest
from fhir_server.errors import OperationOutcomeError
from fhir_server.repository import Repository
from fhir_server.storage.port import TenantStore
from fhir_server.tenant_settings import SOFTWARE_CONFIGURATION, setting_event
from fhir_server.workflow.definition import definition_product
from fhir_server.workflow.library import SHIPPED, shipped
from fhir_server.workflow.lifecycle import activate, definition_hook, is_workflow_definition, retire
from fhir_server.workflow.product_rules import describe_rules, read_rules, set_rules

MAX_FILE_BYTES = 1_000_000


def workflow_command(args: argparse.Namespace) -> int:
    settings = settings_from(args)

    async def run() -> int:
        async with opened_engine(settings) as engine:
            store = await tenant_or_none(engine, args.tenant)
            if store is None:
                return 2
            repo = Repository.system(store, reason="dermbridge workflow CLI")
            try:
                code, change = await _act(args, repo)
            except OperationOutcomeError as exc:
                print(exc.outcome["issue"][0].get("diagnostics", "refused"), file=sys.stderr)
                return 1
            if change and settings.audit_enabled:
                trail = open_audit_trail(settings)
                try:
                    await trail.record(store, setting_event("workflow", SOFTWARE_CONFIGURATION, "dermbridge CLI",
                                                            change))  # fmt: skip
                finally:
                    await trail.close()
            return code

    return asyncio.run(run())


async def _act(args: argparse.Namespace, repo: Repository) -> tuple[int, str]:
    if args.action == "product-rules":
        return await _product_rules(args, repo.store)
    if args.action == "list":
        for name in SHIPPED:
            print(_line(shipped(name), f"shipped:{name}"))
        for stored in await repo.find("PlanDefinition", [("_sort", "-_lastUpdated")], 1000):
            if is_workflow_definition(stored.resource):
                print(_line(stored.resource, f"PlanDefinition/{stored.resource['id']}"))
        return 0, ""
    if args.action == "show":
        print(json.dumps(await _named(repo, args.name), indent=2))
        return 0, ""
    if args.action == "import":
        body = _load(args.name)
        if body is None:
            return 2, ""
        body.pop("id", None)
        body["status"] = "draft"
        await definition_hook(repo, FhirRequest("POST", ["PlanDefinition"], body=body))
        stored = await repo.create(body, resource_type="PlanDefinition")
        print(f"imported as PlanDefinition/{stored.resource['id']} (draft); publish it with: "
              f"dermbridge workflow activate {stored.resource['id']} --tenant {args.tenant}")  # fmt: skip
        return 0, f"imported PlanDefinition/{stored.resource['id']} ({body.get('url')}|{body.get('version')})"
    handler = activate if args.action == "activate" else retire
    request = FhirRequest("POST", ["PlanDefinition", args.name, f"${args.action}"])
    resource = (await handler(repo, request, "PlanDefinition", args.name)).body or {}
    print(_line(resource, f"PlanDefinition/{args.name}"))
    return 0, f"{args.action} PlanDefinition/{args.name} ({resource.get('url')}|{resource.get('version')})"


async def _product_rules(args: argparse.Namespace, store: TenantStore) -> tuple[int, str]:
    """``product-rules show|set --file rules.json|reset``: the tenant's rules for the product of a DICOM case."""
    if args.name not in ("show", "set", "reset") or (args.name == "set" and not args.file):
        print("usage: dermbridge workflow product-rules show | set --file rules.json | reset", file=sys.stderr)
        return 2, ""
    if args.name == "show":
        rules = await read_rules(store)
    else:
        value = _load_json(args.file) if args.name == "set" else None
        if args.name == "set" and value is None:
            return 2, ""
        rules = await set_rules(store, value, is_keyword)
    lines = describe_rules(rules) or ["(no rules: cases DICOM ingest opens take the tenant's default product)"]
    print("\n".join(lines))
    return 0, "" if args.name == "show" else f"product rules now: {'; '.join(lines)}"


async def _named(repo: Repository, name: str) -> dict[str, Any]:
    if name.startswith("shipped:") and name.removeprefix("shipped:") in SHIPPED:
        return shipped(name.removeprefix("shipped:"))
    return (await repo.read("PlanDefinition", name.removeprefix("PlanDefinition/"))).resource


def _load(name: str) -> dict[str, Any] | None:
    """A shipped definition (``shipped:ai-only``) or a JSON file."""
    if name.startswith("shipped:"):
        if name.removeprefix("shipped:") not in SHIPPED:
            print(f"no shipped definition {name!r}; shipped: {', '.join(SHIPPED)}", file=sys.stderr)
            return None
        return shipped(name.removeprefix("shipped:"))
    body = _load_json(name)
    if body is None:
        return None
    if not isinstance(body, dict) or body.get("resourceType") != "PlanDefinition":
        print(f"{name}: not a PlanDefinition", file=sys.stderr)
        return None
    return body


def _load_json(name: str) -> Any | None:
    """A JSON file of at most MAX_FILE_BYTES (None, said on stderr, when it is not)."""
    path = Path(name)
    if not path.is_file() or path.stat().st_size > MAX_FILE_BYTES:
        print(f"{name}: not a file of at most {MAX_FILE_BYTES} bytes", file=sys.stderr)
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        print(f"{name}: not JSON: {exc}", file=sys.stderr)
        return None


def _line(plan: dict[str, Any], where: str) -> str:
    return "\t".join((where, f"{plan.get('url')}|{plan.get('version')}", definition_product(plan) or "-",
                      str(plan.get("status")), str(plan.get("title") or "")))  # fmt: skip


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    workflow = commands.add_parser("workflow", help="list, show, import, activate or retire workflow definitions; "
                                   "show, set or reset the product rules of DICOM cases")  # fmt: skip
    workflow.add_argument("action", choices=["list", "show", "import", "activate", "retire", "product-rules"])
    workflow.add_argument("name", nargs="?", help="show: shipped:NAME or an id; import: shipped:NAME or a JSON file; "
                          "activate/retire: the PlanDefinition id; product-rules: show, set or reset")  # fmt: skip
    workflow.add_argument("--file", help="product-rules set: a JSON file of rules (see README, Workflows)")
    workflow.add_argument("--tenant", default="default")
    workflow.add_argument("--data-dir", type=Path)
    workflow.set_defaults(func=workflow_command)
