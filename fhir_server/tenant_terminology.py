"""The terminology a request sees: its tenant's own CodeSystems, ValueSets and ConceptMaps (read through
the repository, so the caller's access decides), above the shipped base content (``terminology.content``).
A large code system's concepts are in a store of their own (``fhir_server.code_system_stores``).

A caller that may not read a type sees only the base content of that type. Indexes of the tenant's code
systems are kept per (tenant, id, version), so an update is seen at once; the LRU bounds the memory.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from fhir_server.code_system_stores import held_store
from fhir_server.errors import OperationOutcomeError
from fhir_server.repository import Repository, Stored
from fhir_server.search.escaping import escape
from terminology.codesystem import CodeSystemIndex, CodeSystemView
from terminology.content import BaseContent, base_content
from terminology.errors import TerminologyError
from terminology.resolver import Layered, Resolver

MAX_INDEXES = 32  # tenant code system indexes kept in memory
MAX_MAPS = 50  # tenant ConceptMaps one $translate consults


class _IndexCache:
    def __init__(self) -> None:
        self._items: OrderedDict[tuple[str, str, str], CodeSystemIndex] = OrderedDict()

    def get(self, key: tuple[str, str, str], resource: dict[str, Any]) -> CodeSystemIndex:
        found = self._items.get(key)
        if found is None:
            found = self._items[key] = CodeSystemIndex.of(resource)
        self._items.move_to_end(key)
        while len(self._items) > MAX_INDEXES:
            self._items.popitem(last=False)
        return found


_indexes = _IndexCache()


class TenantTerminology:
    """A ``terminology.resolver.Resolver`` over the tenant's resources, as the caller may read them."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo

    async def find_stored(self, resource_type: str, url: str, version: str | None) -> Stored | None:
        if not self.repo.may(resource_type, "r"):
            return None
        criteria = [("url", escape(url))] + ([("version", escape(version))] if version else [])
        found = await self.repo.find(resource_type, criteria, 1)
        return found[0] if found else None

    async def code_system(self, url: str, version: str | None = None) -> CodeSystemView | None:
        stored = await self.find_stored("CodeSystem", url, version)
        if stored is None:
            return None
        held = await held_store(self.repo.transaction or self.repo.store, stored.resource)
        if held is not None:
            return held
        key = (self.repo.tenant, str(stored.resource.get("id")), str(stored.version.version))
        return _indexes.get(key, stored.resource)

    async def value_set(self, url: str, version: str | None = None) -> dict[str, Any] | None:
        stored = await self.find_stored("ValueSet", url, version)
        return stored.resource if stored is not None else None

    async def concept_map(self, url: str) -> dict[str, Any] | None:
        stored = await self.find_stored("ConceptMap", url, None)
        return stored.resource if stored is not None else None

    async def concept_maps(self, source_system: str | None) -> list[dict[str, Any]]:
        if not self.repo.may("ConceptMap", "r"):
            return []
        criteria = [("source-system", escape(source_system))] if source_system else []
        return [s.resource for s in await self.repo.find("ConceptMap", criteria, MAX_MAPS)]


def resolver_for(repo: Repository, pinned: dict[str, Any] | None = None) -> Resolver:
    """The tenant's resources above the base content; ``pinned`` (an instance the operation is invoked
    on, or one given inline) above both."""
    layers: list[Resolver] = [TenantTerminology(repo), base_content()]
    if pinned is not None and pinned.get("content") != "not-present":  # its concepts are in a store
        layers.insert(0, BaseContent([pinned]))
    return Layered(layers)


async def read_terminology_resource(repo: Repository, resource_type: str, id: str) -> dict[str, Any]:
    """The tenant's resource ``resource_type/id``, else the base content's of that id (404 when neither)."""
    try:
        return (await repo.read(resource_type, id)).resource
    except OperationOutcomeError as error:
        shipped = base_content().read(resource_type, id)
        if error.status != 404 or shipped is None:
            raise
        return shipped


def as_outcome_error(error: TerminologyError) -> OperationOutcomeError:
    return OperationOutcomeError.of(error.status, error.code, error.message, error.expression or None)
