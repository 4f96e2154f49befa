"""``dermbridge terminology load PATH``: a tenant's own terminology, whose licence is the user's.

- A SNOMED CT release in RF2 (a directory or zip holding the Snapshot files) becomes a store of its own
  (``terminology.closure_store``, under ``DATA_DIR/terminology/TENANT``) and a ``not-present`` CodeSystem
  resource naming it (``fhir_server.code_system_stores``).
- A FHIR package (``package.tgz``), a Bundle or one resource's JSON: each CodeSystem, ValueSet and
  ConceptMap is written as an ordinary resource (conditional update on ``url`` and ``version``, so loading
  again replaces what was loaded), except a CodeSystem of more than ``STORE_ABOVE`` concepts, which goes
  to a store like an RF2 release.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from dermbridge.cli_support import run_on_tenant, settings_from
from fhir_server.audit.trail import AuditTrail
from fhir_server.code_system_stores import register_store
from fhir_server.errors import OperationOutcomeError
from fhir_server.repository import Repository
from fhir_server.search.escaping import escape
from fhir_server.storage.port import TenantStore
from fhir_server.tenant_settings import SOFTWARE_CONFIGURATION, setting_event
from terminology.closure_store import StoredConcept, write_store
from terminology.codesystem import CodeSystemIndex
from terminology.errors import TerminologyError
from terminology.package import read_terminology
from terminology.rf2 import SNOMED, read_release

STORE_ABOVE = 20_000  # concepts of a CodeSystem from a package beyond which it is held in a store


def is_rf2(path: Path) -> bool:
    return path.is_dir() or path.name.endswith(".zip")


def terminology_command(args: argparse.Namespace) -> int:
    if not is_rf2(args.file):
        try:
            resources = read_terminology(args.file)
        except (TerminologyError, OSError) as exc:
            print(f"{args.file}: {exc}", file=sys.stderr)
            return 2
    directory = settings_from(args).data_dir / "terminology" / args.tenant

    async def act(store: TenantStore, trail: AuditTrail | None) -> int:
        started = time.monotonic()
        if is_rf2(args.file):
            loaded, failed = await load_rf2(store, args.file, directory)
        else:
            loaded, failed = await load(Repository.system(store, reason="dermbridge terminology CLI"), resources)
            loaded += await load_large(store, resources, directory)
        summary = ", ".join(f"{n} {t}" for t, n in sorted(loaded.items())) or "nothing"
        seconds = f" in {time.monotonic() - started:.0f} s" if time.monotonic() - started >= 10 else ""
        print(
            f"{args.tenant}: loaded {summary} from {args.file.name}{seconds}"
            + (f"; {failed} refused" if failed else "")
        )
        if loaded and trail is not None:
            change = f"loaded {summary} from {args.file.name}"
            await trail.record(store, setting_event("terminology", SOFTWARE_CONFIGURATION, "dermbridge CLI", change))
        return 1 if failed else 0

    return run_on_tenant(args, act)


def _store_path(directory: Path, url: str, version: str | None) -> Path:
    """A new file for each load: a store is never rewritten in place (readers open it immutable)."""
    digest = hashlib.sha256(f"{url}|{version or ''}".encode()).hexdigest()[:16]
    return directory / f"codesystem-{digest}-{uuid.uuid4().hex[:8]}.sqlite"


async def _register(store: TenantStore, resource: dict[str, Any], target: Path, count: int) -> None:
    replaced = await register_store(store, resource, target, count)
    if replaced is not None:
        _remove(replaced)


def _remove(path: str) -> None:
    Path(path).unlink(missing_ok=True)


async def load_rf2(store: TenantStore, path: Path, directory: Path) -> tuple[Counter[str], int]:
    """A SNOMED CT RF2 release into a store (SNOMED CT URI specification for url and version)."""
    try:
        release, concepts, is_a = read_release(path)
    except (TerminologyError, OSError) as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return Counter(), 1
    resource = {
        "resourceType": "CodeSystem",
        "url": SNOMED,
        "version": release.version,
        "name": "SNOMED_CT",
        "title": "SNOMED CT",
        "status": "active",
        "hierarchyMeaning": "is-a",
        "caseSensitive": False,
        "copyright": "SNOMED CT, loaded from a release the user supplied under the user's own licence.",
    }
    meta = {"url": SNOMED, "version": release.version, "name": "SNOMED CT", "caseSensitive": "false"}
    target = _store_path(directory, SNOMED, release.version)
    count = write_store(target, meta, concepts, is_a)
    await _register(store, resource, target, count)
    return Counter({f"CodeSystem ({count} concepts, {release.version})": 1}), 0


async def load_large(store: TenantStore, resources: list[dict[str, Any]], directory: Path) -> Counter[str]:
    """The CodeSystems ``load`` left for a store (``STORE_ABOVE``)."""
    loaded: Counter[str] = Counter()
    for resource in resources:
        if not _is_large(resource):
            continue
        index = CodeSystemIndex.of(resource)
        concepts = (
            StoredConcept(c.code, c.display, tuple(_designation(d) for d in c.designations))
            for c in index.concepts.values()
        )
        pairs = ((c.code, p) for c in index.concepts.values() for p in c.parents)
        meta = {"url": index.url, "version": index.version or "", "name": index.name or index.url}
        meta["caseSensitive"] = "true" if index.case_sensitive else "false"
        target = _store_path(directory, index.url, index.version)
        count = write_store(target, meta, concepts, pairs)
        await _register(store, resource, target, count)
        loaded[f"CodeSystem ({count} concepts)"] += 1
    return loaded


def _designation(item: dict[str, Any]) -> tuple[str | None, str | None, str | None, str]:
    use: dict[str, Any] = item["use"] if isinstance(item.get("use"), dict) else {}
    return use.get("system"), use.get("code"), item.get("language"), str(item.get("value", ""))


def _is_large(resource: dict[str, Any]) -> bool:
    if resource.get("resourceType") != "CodeSystem" or not isinstance(resource.get("url"), str):
        return False
    count, stack = 0, list(resource.get("concept") or [])
    while stack and count <= STORE_ABOVE:
        item = stack.pop()
        count += 1
        stack.extend((item.get("concept") or []) if isinstance(item, dict) else [])
    return count > STORE_ABOVE


async def load(repo: Repository, resources: list[dict[str, Any]]) -> tuple[Counter[str], int]:
    """Write each resource (a large CodeSystem is left to ``load_large``); one refused (e.g. invalid, or
    too large) is reported and the others go on."""
    loaded: Counter[str] = Counter()
    failed = 0
    for resource in resources:
        kind, url = resource["resourceType"], resource.get("url")
        if not isinstance(url, str):
            print(f"{kind}/{resource.get('id', '?')}: no url, skipped", file=sys.stderr)
            failed += 1
            continue
        if _is_large(resource):
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
    terminology.add_argument(
        "file",
        type=Path,
        help="a SNOMED CT RF2 release (directory or .zip), a FHIR package (.tgz), a Bundle or a resource (.json)",
    )
    terminology.add_argument("--tenant", default="default")
    terminology.add_argument("--data-dir", type=Path)
    terminology.set_defaults(func=terminology_command)
