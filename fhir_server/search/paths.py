"""Evaluate the FHIRPath expressions of search parameters.

The R4 search parameters use a handful of path shapes: navigation, ``as``/``ofType``,
``where(field='value')``, ``where(resolve() is Type)`` and ``[n]``. Those are compiled
here into a fast evaluator over the resource JSON; anything else goes to fhirpathpy,
compiled once. fhirpathpy has no ``resolve()``, so ``where(resolve() is T)`` is always
taken by the fast path as a filter on the reference's type.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

# A value found by a path, with its FHIR type when the path made it known (choice types, as()).
Node = tuple[Any, str | None]
Evaluator = Callable[[Any], list[Node]]

_WHERE_EQ = re.compile(r"^where\((\w+)\s*=\s*'([^']*)'\)$")
_WHERE_IS = re.compile(r"^where\(resolve\(\)\s+is\s+(\w+)\)$")
_AS = re.compile(r"^(?:as|ofType)\((\w+)\)$")
_INDEX = re.compile(r"^(\w+)\[(\d+)\]$")
_NAME = re.compile(r"^\w+$")


@dataclass(frozen=True, slots=True)
class _Step:
    kind: str  # child | as | where_eq | where_is | index
    name: str = ""
    value: str = ""


def split_top(text: str, sep: str) -> list[str]:
    """Split on ``sep`` where it is outside parentheses and quotes."""
    parts, depth, quote, start, i = [], 0, False, 0, 0
    while i < len(text):
        ch = text[i]
        if ch == "'":
            quote = not quote
        elif not quote and ch == "(":
            depth += 1
        elif not quote and ch == ")":
            depth -= 1
        elif not quote and depth == 0 and text.startswith(sep, i):
            parts.append(text[start:i])
            i += len(sep)
            start = i
            continue
        i += 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


def _closing_paren(expr: str) -> int:
    depth = 0
    for pos, ch in enumerate(expr):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0:
            return pos
    return len(expr)


def _parse_parenthesised(expr: str) -> list[_Step] | None:
    """``(path as Type)`` or ``(path).rest``."""
    pos = _closing_paren(expr)
    inner, rest = expr[1:pos], expr[pos + 1 :]
    as_parts = split_top(inner, " as ")
    steps = _parse_steps(as_parts[0])
    if steps is None or len(as_parts) > 2:
        return None
    if len(as_parts) == 2:
        steps.append(_Step("as", as_parts[1]))
    if rest:
        more = _parse_steps(rest[1:]) if rest.startswith(".") else None
        if more is None:
            return None
        steps.extend(more)
    return steps


def _parse_steps(expr: str) -> list[_Step] | None:
    expr = expr.strip()
    if expr.startswith("("):
        return _parse_parenthesised(expr)
    steps: list[_Step] = []
    for segment in split_top(expr, "."):
        if m := _WHERE_IS.match(segment):
            steps.append(_Step("where_is", m.group(1)))
        elif m := _WHERE_EQ.match(segment):
            steps.append(_Step("where_eq", m.group(1), m.group(2)))
        elif m := _AS.match(segment):
            steps.append(_Step("as", m.group(1)))
        elif m := _INDEX.match(segment):
            steps.append(_Step("child", m.group(1)))
            steps.append(_Step("index", value=m.group(2)))
        elif _NAME.match(segment):
            steps.append(_Step("child", segment))
        else:
            return None
    return steps


def reference_type(reference: Any) -> str | None:
    """The resource type a Reference points at, from its ``reference`` or ``type``."""
    if not isinstance(reference, dict):
        return None
    ref = reference.get("reference")
    if isinstance(ref, str) and "/" in ref:
        parts = ref.split("/_history/")[0].split("/")
        if len(parts) >= 2:
            return parts[-2]
    kind = reference.get("type")
    return kind if isinstance(kind, str) else None


@functools.cache
def _choice_stems() -> frozenset[str]:
    from fhir_server.definitions import choice_elements

    return choice_elements()


def _child(name: str) -> Callable[[list[Node]], list[Node]]:
    """``.name``: the element's values (a list flattened); for a choice stem, every typed variant."""
    if name not in _choice_stems():

        def child(nodes: list[Node]) -> list[Node]:
            found: list[Node] = []
            for value, _ in nodes:
                if isinstance(value, dict) and (element := value.get(name)) is not None:
                    if isinstance(element, list):
                        found.extend((v, None) for v in element)
                    else:
                        found.append((element, None))
            return found

        return child

    cut = len(name)

    def choice(nodes: list[Node]) -> list[Node]:  # valueQuantity, effectiveDateTime...
        found: list[Node] = []
        for value, _ in nodes:
            if not isinstance(value, dict):
                continue
            if (element := value.get(name)) is not None:
                found.extend((v, None) for v in (element if isinstance(element, list) else [element]))
                continue
            for key, element in value.items():
                if key.startswith(name) and len(key) > cut and key[cut].isupper():
                    found.extend((v, key[cut:]) for v in (element if isinstance(element, list) else [element]))
        return found

    return choice


def _compile_step(step: _Step) -> Callable[[list[Node]], list[Node]]:
    if step.kind == "child":
        return _child(step.name)
    if step.kind == "as":
        wanted, name = step.name.lower(), step.name
        return lambda nodes: [(v, t or name) for v, t in nodes if t is None or t.lower() == wanted]
    if step.kind == "where_eq":
        field, equal = step.name, step.value
        return lambda nodes: [(v, t) for v, t in nodes if isinstance(v, dict) and v.get(field) == equal]
    if step.kind == "where_is":
        kind = step.name
        return lambda nodes: [(v, t) for v, t in nodes if reference_type(v) == kind]
    if step.kind == "index":
        index = int(step.value)
        return lambda nodes: nodes[index : index + 1]
    raise ValueError(step.kind)


def _fast(steps: list[_Step]) -> Evaluator:
    compiled = [_compile_step(step) for step in steps]

    def evaluate(value: Any) -> list[Node]:
        nodes: list[Node] = [(value, None)]
        for apply in compiled:
            nodes = apply(nodes)
            if not nodes:
                break
        return nodes

    return evaluate


def _fhirpath(expr: str) -> Evaluator:
    from fhirpathpy import compile as compile_fhirpath
    from fhirpathpy.models import models

    compiled = compile_fhirpath(expr, models["r4"])

    def evaluate(value: Any) -> list[Node]:
        try:
            return [(v, None) for v in compiled(value, {})]
        except Exception:  # an expression failing on odd content must not block a write
            log.debug("FHIRPath evaluation failed for %s", expr, exc_info=True)
            return []

    return evaluate


def compile_relative(expr: str) -> Evaluator:
    """Compile an expression evaluated from an element (composite components)."""
    evaluators = []
    for part in split_top(expr, "|"):
        steps = _parse_steps(part)
        evaluators.append(_fast(steps) if steps is not None else _fhirpath(part))
    return _union(evaluators)


def compile_for_type(expr: str, resource_type: str) -> Evaluator | None:
    """Compile the parts of a union expression that apply to ``resource_type``; None if none do."""
    evaluators = []
    for part in split_top(expr, "|"):
        root = part.lstrip("(").split(".", 1)[0].split(" ", 1)[0]
        if root not in (resource_type, "Resource", "DomainResource"):
            continue
        steps = _parse_steps(part)
        if steps is not None and steps and steps[0].kind == "child" and steps[0].name == root:
            evaluators.append(_fast(steps[1:]))
        else:
            evaluators.append(_fhirpath(part))
    return _union(evaluators) if evaluators else None


def _union(evaluators: list[Evaluator]) -> Evaluator:
    if len(evaluators) == 1:
        return evaluators[0]

    def evaluate(value: Any) -> list[Node]:
        return [node for evaluator in evaluators for node in evaluator(value)]

    return evaluate
