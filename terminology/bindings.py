"""Checking the coded elements of a resource against terminology bindings (terminologies.html#binding,
elementdefinition-definitions.html#ElementDefinition.binding): ``required`` -> an ``error`` issue when no
code given is in the value set; ``extensible`` and ``preferred`` -> a ``warning``; a code the server cannot
decide (``terminology.membership``) -> at most an ``information`` issue, never a refusal.

``check_bindings`` is the one entry point, for the base specification's bindings (``fhir_server``) and a
profile's (``conformance``) alike: a ``Binding`` names an element by its ElementDefinition path
(``Observation.component.code``, ``Observation.value[x]``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from terminology.membership import Membership, Verdict

Strength = Literal["required", "extensible", "preferred"]
SEVERITY = {"required": "error", "extensible": "warning", "preferred": "warning"}
MAX_ISSUES = 50  # issues one resource's check may report
MAX_VALUES = 1_000  # coded values one resource's check looks at


@dataclass(frozen=True, slots=True)
class Binding:
    """A binding of the element at ``path`` (ElementDefinition.path) to the value set ``value_set``."""

    path: str
    strength: Strength
    value_set: str


def coded_values(resource: dict[str, Any], path: str) -> Iterator[tuple[str, Any]]:
    """(FHIRPath-style expression, value) of every value at ``path``; ``name[x]`` matches each choice type."""
    root, *steps = path.split(".")
    stack: list[tuple[str, Any, int]] = [(root, resource, 0)]
    while stack:
        where, node, depth = stack.pop()
        if isinstance(node, list):
            stack.extend((f"{where}[{i}]", item, depth) for i, item in reversed(list(enumerate(node))))
            continue
        if depth == len(steps):
            yield where, node
            continue
        if not isinstance(node, dict):
            continue
        step = steps[depth]
        keys = [step] if not step.endswith("[x]") else [k for k in node if _choice(k, step[:-3])]
        stack.extend((f"{where}.{key}", node[key], depth + 1) for key in reversed(keys) if key in node)


def _choice(key: str, stem: str) -> bool:
    return key.startswith(stem) and len(key) > len(stem) and key[len(stem)].isupper()


def _codings(value: Any) -> tuple[list[tuple[str | None, str]], bool] | None:
    """The (system, code) pairs of a code, Coding or CodeableConcept, and whether it is a CodeableConcept."""
    if isinstance(value, str):
        return [(None, value)], False
    if not isinstance(value, dict):
        return None
    if "coding" in value or ("text" in value and "code" not in value):
        items = [c for c in value.get("coding") or [] if isinstance(c, dict)]
        return [(_str(c.get("system")), str(c["code"])) for c in items if isinstance(c.get("code"), str)], True
    if isinstance(value.get("code"), str):
        return [(_str(value.get("system")), value["code"])], False
    return None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


_STOPPED = f"the bindings of coded values after the first {MAX_VALUES} (or after {MAX_ISSUES} issues) were not checked"


def _issue(severity: str, code: str, message: str, expression: str) -> dict[str, Any]:
    return {"severity": severity, "code": code, "diagnostics": message, "expression": [expression]}


async def check_bindings(
    resource: dict[str, Any], bindings: Sequence[Binding], membership: Membership
) -> list[dict[str, Any]]:
    """OperationOutcome issues for the coded values of ``resource`` under ``bindings`` (none: all is well)."""
    issues: list[dict[str, Any]] = []
    seen = 0
    for binding in bindings:
        for expression, value in coded_values(resource, binding.path):
            seen += 1
            if seen > MAX_VALUES or len(issues) >= MAX_ISSUES:
                return [*issues, _issue("information", "too-costly", _STOPPED, binding.path)]
            found = _codings(value)
            if found is not None:
                issue = await _judge(binding, expression, *found, membership)
                if issue is not None:
                    issues.append(issue)
    return issues


async def _judge(
    binding: Binding, expression: str, codings: list[tuple[str | None, str]], concept: bool, membership: Membership
) -> dict[str, Any] | None:
    name = f"{binding.strength} binding to {binding.value_set}"
    if await membership.value_set(binding.value_set) is None:
        return _issue(
            "information", "informational", f"{name}: the value set is not held here, not checked", expression
        )
    if not codings:
        if binding.strength != "required":
            return None
        return _issue("error", "code-invalid", f"no code given, and the {name} needs one", expression)
    verdicts: list[Verdict] = [await membership.verdict(binding.value_set, s, c) for s, c in codings]
    if "member" in verdicts:
        return None
    given = ", ".join(f"{s}#{c}" if s else c for s, c in codings)
    if "unknown" in verdicts:
        message = f"{name}: {given} cannot be checked here (its code system is not held in full)"
        return _issue("information", "informational", message, expression)
    what = "none of the codes" if concept and len(codings) > 1 else "the code"
    message = f"{what} {given} is not in the value set ({name})"
    return _issue(SEVERITY[binding.strength], "code-invalid", message, expression)
