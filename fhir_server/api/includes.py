"""``_include`` and ``_revinclude``, with ``:iterate`` (search.html#include).

What the caller may not read is left out (the repository's ``read_visible``/``search_visible``)."""

from __future__ import annotations

from fhir_server.repository import Repository, Stored
from fhir_server.search.extract import parse_local_reference
from fhir_server.search.parameters import SearchParameter, parameters_for
from fhir_server.search.request import IncludeSpec, SearchRequest
from fhir_server.storage.port import ResourceKey
from fhir_server.storage.query import ParamClause, ReferenceMatch, SearchQuery

MAX_INCLUDED = 1000
MAX_ITERATIONS = 4


def _reference_params(resource_type: str, spec: IncludeSpec) -> list[SearchParameter]:
    params = parameters_for(resource_type)
    if spec.param == "*":
        return [p for p in params.values() if p.type == "reference" and p.evaluate is not None]
    found = params.get(spec.param)
    return [found] if found is not None and found.evaluate is not None else []


def _targets(stored: Stored, spec: IncludeSpec, local_base: str | None) -> set[ResourceKey]:
    keys: set[ResourceKey] = set()
    for param in _reference_params(stored.version.resource_type, spec):
        assert param.evaluate is not None
        for value, _ in param.evaluate(stored.resource):
            ref = value.get("reference") if isinstance(value, dict) else None
            if not isinstance(ref, str):
                continue
            if local_base and ref.startswith(local_base + "/"):
                ref = ref[len(local_base) + 1 :]
            if ref.startswith(("http://", "https://")):
                continue
            target = parse_local_reference(ref)
            if target is not None and (spec.target_type is None or target[0] == spec.target_type):
                keys.add(ResourceKey(*target))
    return keys


def _applies(spec: IncludeSpec, resource_type: str) -> bool:
    return spec.source_type in ("*", resource_type)


async def _forward(
    repo: Repository, sources: list[Stored], specs: list[IncludeSpec], seen: set[ResourceKey]
) -> list[Stored]:
    wanted: set[ResourceKey] = set()
    for stored in sources:
        for spec in specs:
            if _applies(spec, stored.version.resource_type):
                wanted |= _targets(stored, spec, repo.local_base)
    wanted -= seen
    return await repo.read_visible(sorted(wanted, key=lambda k: (k.resource_type, k.id))[:MAX_INCLUDED])


async def _reverse(
    repo: Repository, sources: list[Stored], specs: list[IncludeSpec], seen: set[ResourceKey]
) -> list[Stored]:
    found: list[Stored] = []
    for spec in specs:
        matches = tuple(
            ReferenceMatch(s.version.resource_type, s.version.id)
            for s in sources
            if spec.target_type in (None, s.version.resource_type)
        )
        if not matches or spec.param == "*":
            continue
        query = SearchQuery(
            (spec.source_type,), (ParamClause(spec.param, "reference", matches),), count=MAX_INCLUDED, total="none"
        )
        found.extend(s for s in await repo.search_visible(query) if s.version.key not in seen)
    return found


async def resolve_includes(repo: Repository, matches: list[Stored], request: SearchRequest) -> list[Stored]:
    """The resources the include parameters add to a page of matches, each once."""
    seen = {s.version.key for s in matches}
    included: list[Stored] = []

    def add(items: list[Stored]) -> list[Stored]:
        fresh = [s for s in items if s.version.key not in seen]
        for s in fresh:
            seen.add(s.version.key)
        included.extend(fresh)
        return fresh

    add(await _forward(repo, matches, request.includes, seen))
    add(await _reverse(repo, matches, request.revincludes, seen))
    forward_iter = [s for s in request.includes if s.iterate]
    reverse_iter = [s for s in request.revincludes if s.iterate]
    frontier = list(included)
    for _ in range(MAX_ITERATIONS):
        if not frontier or not (forward_iter or reverse_iter) or len(included) >= MAX_INCLUDED:
            break
        fresh = add(await _forward(repo, frontier, forward_iter, seen))
        fresh += add(await _reverse(repo, frontier, reverse_iter, seen))
        frontier = fresh
    return included[:MAX_INCLUDED]
