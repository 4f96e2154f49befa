"""Where the operations find CodeSystems, ValueSets and ConceptMaps by canonical URL: the shipped base
content (``terminology.content``) and each tenant's own resources, the tenant's first so that a tenant
that loads a full edition (e.g. SNOMED CT) replaces the shipped fragment (terminology-service.html)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from terminology.codesystem import CodeSystemView
from terminology.errors import TerminologyError, unknown


class Resolver(Protocol):
    async def code_system(self, url: str, version: str | None = None) -> CodeSystemView | None: ...

    async def value_set(self, url: str, version: str | None = None) -> dict[str, Any] | None: ...

    async def concept_maps(self, source_system: str | None) -> list[dict[str, Any]]:
        """The ConceptMaps with a group whose source is ``source_system`` (all when None)."""
        ...


class Layered:
    """The first resolver that knows a URL answers; concept maps are collected from all."""

    def __init__(self, layers: Sequence[Resolver]) -> None:
        self.layers = tuple(layers)

    async def code_system(self, url: str, version: str | None = None) -> CodeSystemView | None:
        for layer in self.layers:
            found = await layer.code_system(url, version)
            if found is not None:
                return found
        return None

    async def value_set(self, url: str, version: str | None = None) -> dict[str, Any] | None:
        for layer in self.layers:
            found = await layer.value_set(url, version)
            if found is not None:
                return found
        return None

    async def concept_maps(self, source_system: str | None) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for layer in self.layers:
            found.extend(await layer.concept_maps(source_system))
        return found


def split_canonical(url: str, version: str | None) -> tuple[str, str | None]:
    """``url|version`` (references.html#canonical) into its parts; an explicit ``version`` wins."""
    base, bar, embedded = url.partition("|")
    return base, version or (embedded if bar else None)


async def require_code_system(resolver: Resolver, url: str, version: str | None, expression: str) -> CodeSystemView:
    """The code system, or 404 naming the system (and version) the server does not know."""
    found = await resolver.code_system(url, version)
    if found is None:
        if version and await resolver.code_system(url) is not None:
            raise TerminologyError(
                404, "not-found", f"version {version} of code system {url} is not known to this server", [expression]
            )
        raise unknown(f"code system {url}", expression)
    return found


async def require_value_set(resolver: Resolver, url: str, version: str | None, expression: str) -> dict[str, Any]:
    found = await resolver.value_set(url, version)
    if found is None:
        raise unknown(f"value set {url}" + (f" version {version}" if version else ""), expression)
    return found
