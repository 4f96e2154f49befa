"""Examples with stable identities: a server assigns random ids, versions and times to what it writes, which
an example in a package should not carry from one build to the next. Each example gets the id
``{profile id}-example``, every other resource it references ``{type}-{n}`` (in the order first met), and
every reference follows, versioned ones too (references.html#literal); ``meta`` keeps only ``security``, ``tag``
and ``profile`` (the package's own profiles: a validator loading the package knows no others)."""

from __future__ import annotations

import copy
import re
from typing import Any

_LITERAL = re.compile(r"^(?P<target>(?P<type>[A-Z][A-Za-z]+)/[A-Za-z0-9\-.]{1,64})(?P<version>/_history/[^/]+)?$")
_KEPT_META = ("security", "tag")


def _example_id(resource: dict[str, Any]) -> str:
    profile = str(resource["meta"]["profile"][0])
    return f"{profile.rsplit('/', 1)[1]}-example"[:64]


def _references(node: Any) -> list[dict[str, Any]]:
    """Every object with a ``reference`` string, in document order."""
    if isinstance(node, dict):
        own = [node] if isinstance(node.get("reference"), str) else []
        return own + [r for value in node.values() for r in _references(value)]
    if isinstance(node, list):
        return [r for value in node for r in _references(value)]
    return []


def _renamed(reference: str, renamed: dict[str, str]) -> str:
    found = _LITERAL.match(reference)
    if found is None or found["target"] not in renamed:
        return reference
    return renamed[found["target"]] + (found["version"] or "")


def stable_ids(examples: list[dict[str, Any]], canonical: str) -> list[dict[str, Any]]:
    """The examples (each with ``meta.profile[0]`` the profile it shows) under stable ids."""
    renamed = {f"{r['resourceType']}/{r['id']}": f"{r['resourceType']}/{_example_id(r)}" for r in examples}
    counts: dict[str, int] = {}
    for example in examples:
        for reference in _references(example):
            found = _LITERAL.match(reference["reference"])
            if found and found["target"] not in renamed:
                kind = found["type"]
                counts[kind] = counts.get(kind, 0) + 1
                renamed[found["target"]] = f"{kind}/{kind.lower()}-{counts[kind]}"
    stable = []
    for example in examples:
        stable_copy: dict[str, Any] = copy.deepcopy(example)
        stable_copy["id"] = renamed[f"{example['resourceType']}/{example['id']}"].split("/", 1)[1]
        meta = example.get("meta", {})
        stable_copy["meta"] = {k: v for k, v in meta.items() if k in _KEPT_META} | {
            "profile": [p for p in meta["profile"] if str(p).startswith(f"{canonical}/")]
        }
        for reference in _references(stable_copy):
            reference["reference"] = _renamed(reference["reference"], renamed)
        stable.append(stable_copy)
    return stable
