"""A StructureDefinition's snapshot as a tree of element ids (elementdefinition.html#id): each element's
children, and the slices of each sliced element."""

from __future__ import annotations

from typing import Any

Element = dict[str, Any]


class Structure:
    """The snapshot of one StructureDefinition, navigable by element id."""

    def __init__(self, definition: dict[str, Any]) -> None:
        self.url: str = str(definition["url"])
        self.type: str = str(definition["type"])
        elements: list[Element] = definition["snapshot"]["element"]
        self.root: Element = elements[0]
        self.elements: dict[str, Element] = {_id(e): e for e in elements}
        self.children: dict[str, list[str]] = {}
        self.slices: dict[str, list[str]] = {}
        for element in elements[1:]:
            element_id = _id(element)
            parent, _, last = element_id.rpartition(".")
            if ":" in last:
                self.slices.setdefault(f"{parent}.{last.split(':', 1)[0]}", []).append(element_id)
            else:
                self.children.setdefault(parent, []).append(element_id)

    def children_of(self, element_id: str, fallback: str | None = None) -> list[str]:
        """The child ids of ``element_id``; a slice whose children the snapshot leaves out has its sliced
        element's (``fallback``)."""
        found = self.children.get(element_id)
        if found is None and fallback is not None:
            return self.children.get(fallback, [])
        return found or []


def _id(element: Element) -> str:
    return str(element.get("id") or element["path"])


def json_names(element: Element, node: dict[str, Any]) -> list[tuple[str, str | None]]:
    """The JSON properties of ``node`` that hold ``element`` (json.html#choice): ``(name, type)``, the type
    being the choice's type code when the element is ``value[x]`` and None otherwise."""
    name = str(element["path"]).rsplit(".", 1)[-1]
    if not name.endswith("[x]"):
        return [(name, None)] if name in node else []
    stem = name[:-3]
    found: list[tuple[str, str | None]] = []
    for key in node:
        suffix = key[len(stem) :]
        if key.startswith(stem) and suffix[:1].isupper():
            found.append((key, suffix[0].lower() + suffix[1:] if _is_primitive(suffix) else suffix))
    return found


def _is_primitive(suffix: str) -> bool:
    return suffix in _PRIMITIVES


_PRIMITIVES = {
    p[0].upper() + p[1:]
    for p in ("base64Binary", "boolean", "canonical", "code", "date", "dateTime", "decimal", "id", "instant",
              "integer", "markdown", "oid", "positiveInt", "string", "time", "unsignedInt", "uri", "url", "uuid")
}  # fmt: skip
