"""ValueSet expansion (valueset.html#expansion, valueset-operation-expand.html): the codes a
``compose`` selects, from enumerated concepts, property filters over hierarchical code systems
(``FILTER_OPS``: ``is-a``, ``descendent-of``, ``is-not-a``, ``generalizes``, ``in``, ``not-in``, ``=``, ``exists``)
and other value sets, less the excluded ones. Bounded: an expansion larger than ``MAX_EXPANSION``
codes is refused with ``too-costly`` rather than built."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from terminology.codesystem import CodeSystemView, check_filter
from terminology.errors import TerminologyError, invalid, not_supported, too_costly
from terminology.resolver import Resolver, require_code_system, require_value_set, split_canonical

MAX_EXPANSION = 10_000  # codes one expansion may hold before text filter and paging
MAX_NESTING = 5  # value sets including value sets
MAX_VALUE_SETS = 50  # value sets one expansion may expand, nested ones included


@dataclass(frozen=True, slots=True)
class Entry:
    system: str
    code: str
    display: str | None = None
    version: str | None = None
    other_terms: tuple[str, ...] = ()  # designations (e.g. en-GB "naevus"), for the text filter

    @property
    def key(self) -> tuple[str, str]:
        return self.system, self.code

    def mentions(self, needle: str) -> bool:
        """Whether the casefolded ``needle`` is in the code, the display or another term of it."""
        return any(needle in term.casefold() for term in (self.code, self.display or "", *self.other_terms))

    def contains(self) -> dict[str, Any]:
        item: dict[str, Any] = {"system": self.system, "code": self.code}
        if self.version:
            item["version"] = self.version
        if self.display:
            item["display"] = self.display
        return item


class Expander:
    def __init__(self, resolver: Resolver, limit: int = MAX_EXPANSION, *, terms: bool = True) -> None:
        """``terms``: read each code's designations too (for a text filter)."""
        self.resolver = resolver
        self.limit = limit
        self.terms = terms
        self.expanded = 0

    async def expand(self, value_set: dict[str, Any], depth: int = 0) -> list[Entry]:
        """The codes of ``value_set`` in compose order, each once; an existing expansion is used as is."""
        self.expanded += 1
        if depth > MAX_NESTING or self.expanded > MAX_VALUE_SETS:
            raise too_costly(
                f"value sets nest more than {MAX_NESTING} deep or number more than {MAX_VALUE_SETS}", "valueSet"
            )
        compose = value_set.get("compose")
        if not isinstance(compose, dict):
            contains = (value_set.get("expansion") or {}).get("contains")
            if isinstance(contains, list):
                return self._bounded(_flatten(contains))
            raise TerminologyError(
                422, "processing", f"value set {value_set.get('url', '')} has neither compose nor expansion", []
            )
        included: dict[tuple[str, str], Entry] = {}
        for include in compose.get("include") or []:
            for entry in await self._select(include, depth):
                included.setdefault(entry.key, entry)
                if len(included) > self.limit:
                    raise self._too_large(value_set)
        for exclude in compose.get("exclude") or []:
            for entry in await self._select(exclude, depth):
                included.pop(entry.key, None)
        return list(included.values())

    def _too_large(self, value_set: dict[str, Any]) -> TerminologyError:
        return too_costly(
            f"the expansion of {value_set.get('url') or 'the value set'} has more than {self.limit} codes: "
            "expand a narrower value set or filter it (valueset-operation-expand.html)",
            "url",
        )

    def _bounded(self, entries: list[Entry]) -> list[Entry]:
        if len(entries) > self.limit:
            raise too_costly(f"the expansion has more than {self.limit} codes", "url")
        return entries

    async def _select(self, include: dict[str, Any], depth: int) -> list[Entry]:
        """One ``compose.include`` (or ``exclude``): its system part intersected with its value sets."""
        sets: list[list[Entry]] = []
        for url in include.get("valueSet") or []:
            base, version = split_canonical(str(url), None)
            nested = await require_value_set(self.resolver, base, version, "valueSet")
            sets.append(await self.expand(nested, depth + 1))
        system = include.get("system")
        if isinstance(system, str):
            sets.insert(0, await self._from_system(include, system))
        if not sets:
            return []
        keys = set.intersection(*({e.key for e in s} for s in sets[1:])) if len(sets) > 1 else None
        return [e for e in sets[0] if keys is None or e.key in keys]

    async def _from_system(self, include: dict[str, Any], system: str) -> list[Entry]:
        version = include.get("version")
        concepts = include.get("concept") or []
        filters = include.get("filter") or []
        index = await self.resolver.code_system(system, version)
        if concepts:
            return [_enumerated(system, c, index) for c in concepts if isinstance(c, dict) and c.get("code")]
        index = index or await require_code_system(self.resolver, system, version, "system")
        if not filters:
            if index.content not in ("complete", "fragment", "example"):
                raise TerminologyError(
                    422, "processing", f"code system {system} is not held here in full: it cannot be expanded", []
                )
            return entries(index, index.all_codes(self.limit), self.terms)
        codes: list[str] | None = None
        for item in filters:
            prop, op, value = item.get("property"), item.get("op"), item.get("value")
            check_filter(prop, op)
            if not isinstance(value, str):
                raise not_supported(f"filter operator {op!r} needs a value")
            matched = index.select(str(prop), str(op), value, self.limit)
            if codes is None:
                codes = matched
            else:
                kept = set(matched)  # built once per filter, not once per code
                codes = [c for c in codes if c in kept]
            if len(codes) > self.limit:
                raise too_costly(f"the filter {prop} {op} {value} selects more than {self.limit} codes", "filter")
        return entries(index, codes or [], self.terms)


def entries(index: CodeSystemView, codes: list[str], terms: bool = True) -> list[Entry]:
    """Expansion entries of ``codes``, read in one batch (a code system in a store reads them in one query)."""
    return [
        Entry(
            index.url,
            concept.code,
            concept.display,
            index.version,
            tuple(str(d["value"]) for d in concept.designations if isinstance(d.get("value"), str)),
        )
        for concept in index.many(codes, terms)
    ]


def _enumerated(system: str, concept: dict[str, Any], index: CodeSystemView | None) -> Entry:
    """An enumerated concept: its display from the include, else from the code system when known."""
    code = str(concept["code"])
    known = index.get(code) if index is not None else None
    if index is not None and index.content == "complete" and known is None:
        raise invalid(f"the value set includes {code}, which is not a code of {system}", "compose.include.concept")
    display = concept.get("display") or (known.display if known is not None else None)
    return Entry(system, code, display, index.version if index is not None else None)


def _flatten(contains: Iterable[Any]) -> list[Entry]:
    found: list[Entry] = []
    stack = list(contains)[::-1]
    while stack:
        item = stack.pop()
        if not isinstance(item, dict):
            continue
        if item.get("system") and item.get("code"):
            found.append(Entry(str(item["system"]), str(item["code"]), item.get("display"), item.get("version")))
        stack.extend((item.get("contains") or [])[::-1])
    return found
