"""Whether a code is in a value set, decided only where the terminology held here can decide it
(terminology-service.html; valueset.html#compose): a code system held in full (``content`` ``complete``),
or concepts the value set enumerates. A code of a system held as a fragment, or not held at all, or a value
set that includes one the server does not know, is ``unknown``, never ``not-member``.

Each value set is compiled once (``Membership`` caches it): small parts become code sets (an expansion),
an ``is-a``/``descendent-of`` filter or a whole system too large to expand stays a point query on the code
system (one indexed query on a store, ``terminology.closure_store``). A nested value set stays a part of its
own, judged with its own exclusions; the value sets of one include are intersected.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal

from terminology.codesystem import CodeSystemView
from terminology.errors import TerminologyError
from terminology.resolver import Resolver, split_canonical

Verdict = Literal["member", "not-member", "unknown"]
MAX_COMPILED_CODES = 10_000  # codes one part of a value set may expand to before it stays a point query
MAX_NESTING = 5
MAX_CACHED = 512  # compiled value sets one Membership keeps


def combined(verdicts: list[Verdict], *, all_of: bool) -> Verdict:
    """Several parts' verdicts joined: any member (a union) or every one a member (an intersection)."""
    decisive: Verdict = "not-member" if all_of else "member"
    if decisive in verdicts:
        return decisive
    if "unknown" in verdicts:
        return "unknown"
    return "member" if all_of else "not-member"


@dataclass(slots=True)
class Compiled:
    """A value set as membership tests: code sets per system, point queries, nested value sets (each judged
    with its own exclusions), and what cannot be decided."""

    url: str
    codes: dict[str, set[str]] = field(default_factory=dict)  # system -> member codes
    below: list[tuple[CodeSystemView, str, bool]] = field(default_factory=list)  # (system, code, self included)
    whole: list[CodeSystemView] = field(default_factory=list)  # systems included whole, too large to expand
    excluded: dict[str, set[str]] = field(default_factory=dict)
    nested: list[tuple[Compiled, ...]] = field(default_factory=list)  # one include's value sets: their intersection
    excluded_nested: list[tuple[Compiled, ...]] = field(default_factory=list)  # one exclude's value sets
    open_systems: set[str] = field(default_factory=set)  # systems whose membership cannot be decided
    open_all: bool = False  # an included value set is not known: no code outside ``codes`` is decided

    @property
    def systems(self) -> set[str]:
        nested = {system for parts in self.nested for part in parts for system in part.systems}
        return (
            set(self.codes)
            | {s.url for s, _, _ in self.below}
            | {s.url for s in self.whole}
            | self.open_systems
            | nested
        )

    def verdict(self, system: str, code: str) -> Verdict:
        removed = "member" if code in self.excluded.get(system, ()) else _any_of(self.excluded_nested, system, code)
        if removed == "member":
            return "not-member"
        included = self._included(system, code)
        return "unknown" if included == "member" and removed == "unknown" else included

    def _included(self, system: str, code: str) -> Verdict:
        if code in self.codes.get(system, ()):
            return "member"
        for index, top, itself in self.below:
            if index.url == system and ((code == top and itself) or index.subsumption(top, code) == "subsumes"):
                return "member"
        if any(index.url == system and index.get(code) is not None for index in self.whole):
            return "member"
        open_here: Verdict = "unknown" if self.open_all or system in self.open_systems else "not-member"
        return combined([_any_of(self.nested, system, code), open_here], all_of=False)


def _any_of(intersections: list[tuple[Compiled, ...]], system: str, code: str) -> Verdict:
    """The union of several includes (or excludes) of value sets, each the intersection of its value sets."""
    return combined(
        [combined([part.verdict(system, code) for part in parts], all_of=True) for parts in intersections],
        all_of=False,
    )


class Membership:
    """Value set membership over one resolver, with the compiled value sets cached (bounded LRU)."""

    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver
        self._compiled: OrderedDict[str, Compiled | None] = OrderedDict()

    async def value_set(self, url: str) -> Compiled | None:
        """The compiled value set at canonical ``url`` (``url|version`` allowed), None when not held."""
        if url in self._compiled:
            self._compiled.move_to_end(url)
            return self._compiled[url]
        found = await self._compile(url, 0)
        self._compiled[url] = found
        while len(self._compiled) > MAX_CACHED:
            self._compiled.popitem(last=False)
        return found

    async def verdict(self, url: str, system: str | None, code: str) -> Verdict:
        """``system`` None: a ``code`` element, whose system is the value set's only one."""
        compiled = await self.value_set(url)
        if compiled is None:
            return "unknown"
        if system is not None:
            return compiled.verdict(system, code)
        verdicts = {compiled.verdict(s, code) for s in compiled.systems} or {
            "unknown" if compiled.open_all else "not-member"
        }
        return "member" if "member" in verdicts else "unknown" if "unknown" in verdicts else "not-member"

    async def _compile(self, canonical: str, depth: int) -> Compiled | None:
        url, version = split_canonical(canonical, None)
        value_set = await self.resolver.value_set(url, version)
        if value_set is None or depth > MAX_NESTING:
            return None
        compiled = Compiled(url)
        compose = value_set.get("compose")
        if not isinstance(compose, dict):
            for item in (value_set.get("expansion") or {}).get("contains") or []:
                if isinstance(item, dict) and item.get("system") and item.get("code"):
                    compiled.codes.setdefault(str(item["system"]), set()).add(str(item["code"]))
            compiled.open_all = not compiled.codes
            return compiled
        for include in compose.get("include") or []:
            await self._include(compiled, include, depth)
        for exclude in compose.get("exclude") or []:
            await self._exclude(compiled, exclude, depth)
        return compiled

    async def _include(self, compiled: Compiled, include: dict[str, Any], depth: int) -> None:
        system = include.get("system")
        nested = include.get("valueSet") or []
        if nested and isinstance(system, str):
            compiled.open_systems.add(system)  # a system intersected with value sets: not decided here
            return
        parts = [await self._compile(str(canonical), depth + 1) for canonical in nested]
        if any(part is None for part in parts):
            compiled.open_all = True  # a value set not held: nothing outside the known codes is decided
        elif parts:
            compiled.nested.append(tuple(part for part in parts if part is not None))
        if isinstance(system, str):
            await self._system_part(compiled, include, system)

    async def _system_part(self, compiled: Compiled, include: dict[str, Any], system: str) -> None:
        concepts = [str(c["code"]) for c in include.get("concept") or [] if isinstance(c, dict) and c.get("code")]
        if concepts:
            compiled.codes.setdefault(system, set()).update(concepts)
            return
        index = await self.resolver.code_system(system, include.get("version"))
        if index is None or index.content != "complete":
            compiled.open_systems.add(system)
            return
        filters = include.get("filter") or []
        try:
            if not filters:
                compiled.codes.setdefault(system, set()).update(index.all_codes(MAX_COMPILED_CODES))
                return
            codes: set[str] | None = None
            for item in filters:
                found = set(
                    index.select(
                        str(item.get("property")), str(item.get("op")), str(item.get("value")), MAX_COMPILED_CODES
                    )
                )
                codes = found if codes is None else codes & found
            compiled.codes.setdefault(system, set()).update(codes or ())
        except TerminologyError:
            self._point_query(compiled, index, filters)

    @staticmethod
    def _point_query(compiled: Compiled, index: CodeSystemView, filters: list[Any]) -> None:
        """A part too large to expand: one is-a/descendent-of filter, or the whole system, as a point query."""
        if not filters:
            compiled.whole.append(index)
        elif len(filters) == 1 and filters[0].get("op") in ("is-a", "descendent-of"):
            compiled.below.append((index, str(filters[0].get("value")), filters[0].get("op") == "is-a"))
        else:
            compiled.open_systems.add(index.url)

    async def _exclude(self, compiled: Compiled, exclude: dict[str, Any], depth: int) -> None:
        part = Compiled(compiled.url)
        await self._include(part, exclude, depth)
        if part.below or part.whole or part.open_all or part.open_systems:
            compiled.open_systems |= part.systems  # an exclusion not decided here leaves its systems undecided
            compiled.open_all |= part.open_all
        for system, codes in part.codes.items():
            compiled.excluded.setdefault(system, set()).update(codes)
        compiled.excluded_nested += part.nested
