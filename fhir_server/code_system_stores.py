"""Large code systems of a tenant (a SNOMED CT release, a big CodeSystem of a FHIR package), held in a store
file of their own (``terminology.closure_store``) rather than as one giant CodeSystem resource.

The tenant sees an ordinary CodeSystem resource with ``content`` ``not-present`` (codesystem.html#content:
its concepts are not in the resource) and ``count``; a record of the ``code-system-store`` collection, which
no client can write, names the store file that holds the concepts. Both are written in one transaction,
after the file is complete, so a reader finds either the old release or the new one.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fhir_server.repository import Repository
from fhir_server.search.escaping import escape
from fhir_server.storage.port import Record, TenantReader, TenantStore
from terminology.closure_store import ClosureCodeSystem, open_store

log = logging.getLogger(__name__)
COLLECTION = "code-system-store"


def _key(url: str, version: str | None) -> str:
    return f"{url}|{version or ''}"


async def register_store(store: TenantStore, resource: dict[str, Any], path: Path, count: int) -> str | None:
    """Write the CodeSystem resource (``not-present``, ``count``) and the record naming ``path``; a release
    of the same url and version replaces the one loaded before. Answers the path of the store it replaced
    (each load writes a new file: a process that has the old one open keeps reading it until it restarts)."""
    url, version = str(resource["url"]), resource.get("version")
    body = {k: v for k, v in resource.items() if k not in ("id", "meta", "text", "concept")}
    body |= {"content": "not-present", "count": count}
    criteria = {"url": escape(url)} | ({"version": escape(version)} if isinstance(version, str) else {})
    async with store.transaction() as tx:
        repo = Repository.system(store, reason="dermbridge terminology load: a code system store", tx=tx)
        stored = await repo.conditional_update(body, resource_type="CodeSystem", criteria=urlencode(criteria))
        before = await tx.get_record(COLLECTION, _key(url, version))
        record = {"path": _absolute(path), "count": count, "id": stored.resource["id"]}
        await tx.put_record(Record(COLLECTION, _key(url, version), json.dumps(record).encode(), {"url": (url,)}))
    replaced: str | None = json.loads(before.body)["path"] if before is not None else None
    return replaced if replaced != record["path"] else None


async def held_store(reader: TenantReader, resource: dict[str, Any]) -> ClosureCodeSystem | None:
    """The store holding the concepts of a ``not-present`` CodeSystem resource, if one was loaded for it."""
    if resource.get("content") != "not-present" or not isinstance(resource.get("url"), str):
        return None
    record = await reader.get_record(COLLECTION, _key(resource["url"], resource.get("version")))
    if record is None:
        return None
    return _open(resource["url"], json.loads(record.body)["path"])


def _absolute(path: Path) -> str:
    return str(path.resolve())


def _open(url: str, path: str) -> ClosureCodeSystem | None:
    if not Path(path).is_file():
        log.warning("the store of code system %s is missing: %s (load the release again)", url, path)
        return None
    return open_store(path)
