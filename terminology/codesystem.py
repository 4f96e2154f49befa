"""A CodeSystem resource indexed for the operations: concepts by code, parents and children
(codesystem.html#hierarchy: nesting under ``concept.concept`` and the ``parent``/``child`` properties
both state is-a when ``hierarchyMeaning`` is ``is-a`` or absent)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from terminology.errors import too_costly

MAX_CONCEPTS = 2_000_000  # concepts of one code system held in memory
HIERARCHY_PROPERTIES = ("parent", "child")


@dataclass(slots=True)
class Concept:
    code: str
    display: str | None
    definition: str | None = None
    designations: list[dict[str, Any]] = field(default_factory=list)
    properties: list[dict[str, Any]] = field(default_factory=list)
    parents: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)


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


def _walk(concepts: list[dict[str, Any]], parent: str | None) -> Iterator[tuple[dict[str, Any], str | None]]:
    stack = [(c, parent) for c in reversed(concepts)]
    while stack:
        concept, above = stack.pop()
        if not isinstance(concept, dict):
            continue
        yield concept, above
        code = concept.get("code")
        stack.extend((c, code) for c in reversed(concept.get("concept") or []))
