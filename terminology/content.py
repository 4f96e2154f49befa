"""The shipped, read-only base content: CodeSystems, ValueSets and ConceptMaps vendored into
``terminology/data`` (see terminology/README.md for where each comes from and its licence). Loaded
once, on first use; every tenant sees it below its own resources."""

from __future__ import annotations

import functools
import gzip
import json
from collections.abc import Iterator
from importlib import resources
from typing import Any

from terminology.codesystem import CodeSystemIndex, CodeSystemView

DATA_FILES = ("fhir-r4.json.gz", "dermatology.json")
TYPES = ("CodeSystem", "ValueSet", "ConceptMap")


def _read(name: str) -> list[dict[str, Any]]:
    raw = resources.files(__package__).joinpath("data", name).read_bytes()
    loaded: list[dict[str, Any]] = json.loads(gzip.decompress(raw) if name.endswith(".gz") else raw)
    return loaded


class BaseContent:
    """A resolver over a fixed list of resources (terminology.resolver.Resolver)."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.by_type: dict[str, dict[str, dict[str, Any]]] = {t: {} for t in TYPES}
        self.by_id: dict[tuple[str, str], dict[str, Any]] = {}
        for item in items:
            kind = item.get("resourceType")
            if kind in TYPES and isinstance(item.get("url"), str):
                self.by_type[kind].setdefault(item["url"], item)
                self.by_id[(kind, str(item.get("id")))] = item
        self._indexes: dict[str, CodeSystemIndex] = {}

    def resources(self, resource_type: str) -> Iterator[dict[str, Any]]:
        return iter(self.by_type[resource_type].values())

    def read(self, resource_type: str, id: str) -> dict[str, Any] | None:
        return self.by_id.get((resource_type, id))

    def index(self, url: str) -> CodeSystemIndex | None:
        if url not in self._indexes:
            found = self.by_type["CodeSystem"].get(url)
            if found is None:
                return None
            self._indexes[url] = CodeSystemIndex.of(found)
        return self._indexes[url]

    async def code_system(self, url: str, version: str | None = None) -> CodeSystemView | None:
        index = self.index(url)
        if index is None or (version and index.version and version != index.version):
            return None
        return index

    async def value_set(self, url: str, version: str | None = None) -> dict[str, Any] | None:
        found = self.by_type["ValueSet"].get(url)
        if found is None or (version and found.get("version") and version != found["version"]):
            return None
        return found

    async def concept_maps(self, source_system: str | None) -> list[dict[str, Any]]:
        return [
            m
            for m in self.by_type["ConceptMap"].values()
            if source_system is None or any(g.get("source") == source_system for g in m.get("group") or [])
        ]


@functools.cache
def base_content() -> BaseContent:
    """The shipped content, loaded on first use."""
    items: list[dict[str, Any]] = []
    for name in DATA_FILES:
        items.extend(_read(name))
    return BaseContent(items)
