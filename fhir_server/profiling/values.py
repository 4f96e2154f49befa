"""Fixed and pattern values (elementdefinition.html#ElementDefinition.fixed_x_, ``pattern[x]``) and the
values a slicing discriminator's path reaches (profiling.html#discriminator)."""

from __future__ import annotations

from typing import Any

from fhir_server.profiling.structure import Element


def fixed_value(element: Element) -> tuple[str, Any] | None:
    """``("fixed" | "pattern", value)`` of the element, if it has one."""
    for key, value in element.items():
        if key.startswith("fixed") and key != "fixed":
            return "fixed", value
        if key.startswith("pattern") and key != "pattern":
            return "pattern", value
    return None


def matches_pattern(value: Any, pattern: Any) -> bool:
    """A pattern: every property it names is in the value with a matching value; each item of a list
    pattern matches some item of the value's list."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(k in value and matches_pattern(value[k], p) for k, p in pattern.items())
    if isinstance(pattern, list):
        items = value if isinstance(value, list) else [value]
        return all(any(matches_pattern(v, p) for v in items) for p in pattern)
    return value == pattern


def satisfies(value: Any, kind: str, expected: Any) -> bool:
    """Whether ``value`` satisfies a ``fixed`` (exactly equal) or ``pattern`` (contains) value."""
    return value == expected if kind == "fixed" else matches_pattern(value, expected)


def at_path(value: Any, path: str) -> list[Any]:
    """The values a simple FHIRPath (``$this``, ``url``, ``code.coding``...) reaches from ``value``."""
    found = [value]
    for step in [] if path == "$this" else path.split("."):
        reached: list[Any] = []
        for item in found:
            child = item.get(step) if isinstance(item, dict) else None
            if child is not None:
                reached.extend(child if isinstance(child, list) else [child])
        found = reached
    return found


def reference_type(reference: Any) -> str | None:
    """The resource type a literal reference names (``Patient/1``, ``https://x/fhir/Patient/1``), None
    when it names none (contained ``#id``, ``urn:uuid:``)."""
    if not isinstance(reference, str) or reference.startswith(("#", "urn:")):
        return None
    parts = reference.split("/_history/")[0].rstrip("/").split("/")
    return parts[-2] if len(parts) >= 2 and parts[-2][:1].isupper() else None
