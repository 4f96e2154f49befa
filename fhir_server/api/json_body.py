"""Parse a FHIR JSON body within bounds (json.html; security.html#input-validation).

orjson parses fast but keeps the last of duplicated keys, which json.html forbids ("there are no
duplicate properties"): ``{"resourceType":"Observation","resourceType":"Patient"}`` would be a
Patient. One walk over the parsed containers checks the nesting depth, the array lengths and the
number of values; comparing the ':' of the text with those of the re-serialised value (both counted
in C) tells whether a key may have been dropped, and only then does the standard parser, about
three times slower, look for the repeated key and name it.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from fhir_server.errors import bad_request
from fhir_server.limits import MAX_ARRAY_ITEMS, MAX_BODY_VALUES, MAX_JSON_DEPTH, too_large

Path = tuple[Any, ...]  # (parent path, key or index), () at the root


def parse_json(raw: bytes) -> Any:
    """The JSON value of ``raw``; 400 for invalid JSON, nesting or duplicate keys, 413 for size."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "recursion" in str(exc).lower():
            raise bad_request(f"the body nests objects and arrays more than {MAX_JSON_DEPTH} deep") from exc
        raise bad_request(f"the body is not valid JSON: {exc}") from exc
    _check_shape(value)
    if _keys_may_repeat(raw, value):
        _refuse_duplicates(raw)
    return value


def _check_shape(value: Any) -> None:
    """Walk the containers level by level: depth, array lengths and the number of values within bounds."""
    values, depth = 1, 0
    level = [value] if type(value) in (dict, list) else []
    while level:
        depth += 1
        if depth > MAX_JSON_DEPTH:
            raise bad_request(
                f"the body nests objects and arrays more than {MAX_JSON_DEPTH} deep", _where(value, depth)
            )
        below: list[Any] = []
        add = below.append
        for node in level:
            children = node.values() if type(node) is dict else node
            if type(node) is list and len(node) > MAX_ARRAY_ITEMS:
                where = _where(value, depth, MAX_ARRAY_ITEMS)
                raise too_large(f"{where[0]} has {len(node)} items: at most {MAX_ARRAY_ITEMS} are accepted", where)
            values += len(node)
            for child in children:
                kind = type(child)
                if kind is dict or kind is list:
                    add(child)
        if values > MAX_BODY_VALUES:
            raise too_large(f"the body has more than {MAX_BODY_VALUES} JSON values")
        level = below


def _keys_may_repeat(raw: bytes, value: Any) -> bool:
    """False when no key can have been dropped: every ':' of the text is still in the parsed value.

    Each key brings one ':' and strings keep theirs, so a dropped duplicate leaves the re-serialised
    value with fewer. Only a ``\\u003a`` escape adds a ':' the text does not show: those bodies
    take the slow path.
    """
    return raw.count(b":") != orjson.dumps(value).count(b":") or b"\\u003" in raw.lower()


def _where(root: Any, depth: int, items: int | None = None) -> list[str]:
    """The path of the first container at ``depth`` (with more than ``items`` items): for the diagnostics only."""
    stack: list[tuple[Any, Path, int]] = [(root, (), 1)]
    while stack:
        node, path, level = stack.pop()
        if level == depth and (items is None or (type(node) is list and len(node) > items)):
            return [expression(root, path)]
        if level < depth:
            pairs = node.items() if type(node) is dict else enumerate(node)
            stack.extend((child, (path, key), level + 1) for key, child in pairs if type(child) in (dict, list))
    return ["$"]


def expression(root: Any, path: Path) -> str:
    """A FHIRPath-style expression for ``path``: ``Patient.name[0].given``."""
    parts: list[Any] = []
    while path:
        path, key = path
        parts.append(key)
    root_type = root.get("resourceType") if isinstance(root, dict) else None
    text = root_type if isinstance(root_type, str) else "$"
    for part in reversed(parts):
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def _refuse_duplicates(raw: bytes) -> None:
    """400 naming the first repeated key, found by the standard parser (only run when one may repeat)."""
    repeated: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: set[str] = set()
        for name, _ in items:
            if name in seen:
                repeated.append(name)
            seen.add(name)
        return dict(items)

    json.loads(raw, object_pairs_hook=pairs)
    if repeated:
        name = repeated[0]
        raise bad_request(f"the body repeats the property {name!r}: JSON properties must be unique (json.html)", [name])
