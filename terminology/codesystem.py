"""A CodeSystem resource indexed for the operations: concepts by code, parents and children
(codesystem.html#hierarchy: nesting under ``concept.concept`` and the ``parent``/``child`` properties
both state is-a when ``hierarchyMeaning`` is ``is-a`` or absent)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from terminology.errors import invalid, not_supported, too_costly

MAX_CONCEPTS = 2_000_000  # concepts of one code system held in memory
HIERARCHY_PROPERTIES = ("parent", "child")
HIERARCHY_OPS = ("is-a", "descendent-of", "is-not-a", "generalizes")
FILTER_OPS = (*HIERARCHY_OPS, "in", "not-in", "=", "exists")


@dataclass(slots=True)
class Concept:
    code: str
    display: str | None
    definition: str | None = None
    designations: list[dict[str, Any]] = field(default_factory=list)
    properties: list[dict[str, Any]] = field(default_factory=list)
    parents: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)


class CodeSystemView(Protocol):
    """What the operations need of a code system, whether held in memory (``CodeSystemIndex``) or in a
    store of its own (``terminology.closure_store.ClosureCodeSystem``, for releases of hundreds of
    thousands of concepts)."""

    url: str
    version: str | None
    name: str | None
    content: str
    case_sensitive: bool

    def get(self, code: str) -> Concept | None: ...

    def many(self, codes: Iterable[str], designations: bool = True) -> list[Concept]:
        """The concepts of ``codes`` in the order given, unknown codes left out; ``designations`` False: a
        store may leave them out (an expansion without a text filter does not need them)."""
        ...

    def all_codes(self, limit: int) -> list[str]:
        """Every code in the system's order; too-costly beyond ``limit``."""
        ...

    def select(self, prop: str, op: str, value: str, limit: int) -> list[str]:
        """codesystem-filter-operator: the codes one ``compose.include.filter`` selects, in order."""
        ...

    def descendants(self, code: str, limit: int) -> Iterator[str]: ...

    def ancestors(self, code: str) -> set[str]: ...

    def subsumption(self, code_a: str, code_b: str) -> str: ...


@dataclass(slots=True)
class CodeSystemIndex:
    url: str
    version: str | None
    name: str | None
    content: str  # complete | fragment | not-present | example | supplement
    case_sensitive: bool
    concepts: dict[str, Concept]
    resource_id: str | None = None
    order: dict[str, int] = field(default_factory=dict)  # code -> position in the resource

    @classmethod
    def of(cls, resource: dict[str, Any]) -> CodeSystemIndex:
        """Index a CodeSystem resource (codesystem.html)."""
        index = cls(
            url=str(resource.get("url", "")),
            version=resource.get("version"),
            name=resource.get("title") or resource.get("name"),
            content=str(resource.get("content", "complete")),
            case_sensitive=bool(resource.get("caseSensitive", True)),
            concepts={},
            resource_id=resource.get("id"),
        )
        for concept, parent in _walk(resource.get("concept") or [], None):
            index._add(concept, parent)
        index._link_properties()
        return index

    def _add(self, raw: dict[str, Any], parent: str | None) -> None:
        code = raw.get("code")
        if not isinstance(code, str):
            return
        if len(self.concepts) >= MAX_CONCEPTS:
            raise too_costly(f"code system {self.url} has more than {MAX_CONCEPTS} concepts")
        concept = self.concepts.get(code)
        if concept is None:
            concept = self.concepts[code] = Concept(
                code,
                raw.get("display"),
                raw.get("definition"),
                list(raw.get("designation") or []),
                [p for p in raw.get("property") or [] if p.get("code") not in HIERARCHY_PROPERTIES],
            )
        if parent is not None and parent not in concept.parents:
            concept.parents.append(parent)
        for prop in raw.get("property") or []:
            if prop.get("code") == "parent" and isinstance(prop.get("valueCode"), str):
                concept.parents.append(prop["valueCode"])
            elif prop.get("code") == "child" and isinstance(prop.get("valueCode"), str):
                self._pending_child(code, prop["valueCode"])

    def _pending_child(self, code: str, child: str) -> None:
        self.concepts[code].children.append(child)

    def _link_properties(self) -> None:
        """Make parents and children agree, whichever way the resource stated the hierarchy."""
        for concept in self.concepts.values():
            for child in concept.children:
                target = self.concepts.get(child)
                if target is not None and concept.code not in target.parents:
                    target.parents.append(concept.code)
            concept.children = []
        self.order = {code: i for i, code in enumerate(self.concepts)}
        for concept in self.concepts.values():
            concept.parents = [p for p in dict.fromkeys(concept.parents) if p in self.concepts]
            for parent in concept.parents:
                self.concepts[parent].children.append(concept.code)

    def get(self, code: str) -> Concept | None:
        found = self.concepts.get(code)
        if found is None and not self.case_sensitive:
            lowered = code.lower()
            found = next((c for k, c in self.concepts.items() if k.lower() == lowered), None)
        return found

    def many(self, codes: Iterable[str], designations: bool = True) -> list[Concept]:
        return [c for c in (self.concepts.get(code) for code in codes) if c is not None]

    def all_codes(self, limit: int) -> list[str]:
        if len(self.concepts) > limit:
            raise too_costly(f"{self.url} has more than {limit} codes", "url")
        return list(self.concepts)

    def select(self, prop: str, op: str, value: str, limit: int) -> list[str]:
        return sorted(self._select(prop, op, value, limit), key=self.order.__getitem__)

    def _select(self, prop: str, op: str, value: str, limit: int) -> set[str]:
        check_filter(prop, op)
        if op in HIERARCHY_OPS:
            return self._hierarchy(op, value, limit)
        if op in ("in", "not-in"):
            wanted = {v.strip() for v in value.split(",")}
            selected = {c for c in self.concepts if self._property_values(c, prop) & wanted}
            return selected if op == "in" else set(self.concepts) - selected
        if op == "exists":
            present = {c for c in self.concepts if self._property_values(c, prop)}
            return present if value == "true" else set(self.concepts) - present
        return {c for c in self.concepts if value in self._property_values(c, prop)}

    def _hierarchy(self, op: str, value: str, limit: int) -> set[str]:
        if value not in self.concepts:
            raise invalid(f"{value} is not a code of {self.url}", "filter")
        if op == "generalizes":
            return self.ancestors(value) | {value}
        below = set(self.descendants(value, limit))
        if op == "is-a":
            return below | {value}
        if op == "descendent-of":
            return below
        return set(self.concepts) - below - {value}

    def _property_values(self, code: str, prop: str) -> set[str]:
        concept = self.concepts[code]
        if prop in ("concept", "code"):
            return {code}
        if prop == "parent":
            return set(concept.parents)
        if prop == "child":
            return set(concept.children)
        found: set[str] = set()
        for item in concept.properties:
            if item.get("code") == prop:
                found.update(str(v) for k, v in item.items() if k.startswith("value") and not isinstance(v, dict))
                if isinstance(item.get("valueCoding"), dict):
                    found.add(str(item["valueCoding"].get("code")))
        return found

    def descendants(self, code: str, limit: int) -> Iterator[str]:
        """Every code below ``code`` (not itself), breadth first; ``limit`` bounds the walk."""
        seen = {code}
        queue = deque(self.concepts[code].children if code in self.concepts else [])
        while queue:
            current = queue.popleft()
            if current in seen:
                continue
            seen.add(current)
            if len(seen) > limit + 1:
                raise too_costly(f"more than {limit} codes lie below {code} in {self.url}")
            yield current
            queue.extend(self.concepts[current].children)

    def ancestors(self, code: str) -> set[str]:
        """Every code above ``code`` (not itself)."""
        found: set[str] = set()
        queue = deque(self.concepts[code].parents if code in self.concepts else [])
        while queue:
            current = queue.popleft()
            if current not in found:
                found.add(current)
                queue.extend(self.concepts[current].parents)
        return found

    def subsumption(self, code_a: str, code_b: str) -> str:
        """codesystem-operation-subsumes.html: how A relates to B."""
        if code_a == code_b:
            return "equivalent"
        if code_a in self.ancestors(code_b):
            return "subsumes"
        if code_b in self.ancestors(code_a):
            return "subsumed-by"
        return "not-subsumed"


def check_filter(prop: Any, op: Any) -> None:
    """The filter operators and properties supported (codesystem-filter-operator)."""
    if op not in FILTER_OPS:
        raise not_supported(f"filter operator {op!r} is not supported; use one of {', '.join(FILTER_OPS)}")
    if prop not in ("concept", "code", "parent", "child") and op not in ("=", "exists", "in", "not-in"):
        raise not_supported(f"filter {prop} {op} is not supported")


def _walk(concepts: list[dict[str, Any]], parent: str | None) -> Iterator[tuple[dict[str, Any], str | None]]:
    stack = [(c, parent) for c in reversed(concepts)]
    while stack:
        concept, above = stack.pop()
        if not isinstance(concept, dict):
            continue
        yield concept, above
        code = concept.get("code")
        stack.extend((c, code) for c in reversed(concept.get("concept") or []))
