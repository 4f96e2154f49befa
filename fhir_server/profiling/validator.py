"""Validation of one resource against one StructureDefinition snapshot (validation.html#profile):
cardinality, types (of choice elements and of references' targets), fixed and pattern values, slicing by
``value`` and ``pattern`` discriminators (profiling.html#slicing), FHIRPath invariants and required
bindings. Each issue names the offending element in ``expression`` (FHIRPath, as ``Observation.code.coding[0]``).

Only what the snapshot describes is walked: a profile's snapshot reaches into data types where it
constrains them; the base structure of every element is the R4 schema's and model's business
(``fhir_server.validation``), checked before this.
"""

from __future__ import annotations

from typing import Any

from fhir_server.profiling import invariants
from fhir_server.profiling.bindings import BindingCheck, Bindings
from fhir_server.profiling.structure import Element, Structure, json_names
from fhir_server.profiling.values import at_path, fixed_value, reference_type, satisfies
from terminology.resolver import Resolver

MAX_ISSUES = 50

Issue = dict[str, Any]


def issue(severity: str, code: str, diagnostics: str, expression: str = "") -> Issue:
    found: Issue = {"severity": severity, "code": code, "diagnostics": diagnostics}
    return found | ({"expression": [expression]} if expression else {})


def _max(element: Element) -> int | None:
    top = str(element.get("max", "*"))
    return None if top == "*" else int(top)


class _Walk:
    def __init__(self, structure: Structure, resource: dict[str, Any]) -> None:
        self.structure = structure
        self.resource = resource
        self.issues: list[Issue] = []
        self.bindings: list[BindingCheck] = []

    def add(self, severity: str, code: str, diagnostics: str, expression: str) -> None:
        if len(self.issues) < MAX_ISSUES:
            self.issues.append(issue(severity, code, f"{diagnostics} ({self.structure.url})", expression))

    def node(self, node: dict[str, Any], element_id: str, expression: str, fallback: str | None = None) -> None:
        """The children of the element ``element_id`` in the JSON object ``node``."""
        for child_id in self.structure.children_of(element_id, fallback):
            self.child(node, child_id, expression)

    def child(self, node: dict[str, Any], child_id: str, expression: str) -> None:
        element = self.structure.elements[child_id]
        values: list[tuple[Any, str]] = []
        allowed = {t.get("code") for t in element.get("type", [])}
        for name, type_code in json_names(element, node):
            if type_code is not None and allowed and type_code not in allowed:
                self.add("error", "structure", f"{name} is not allowed here: the types are {sorted(allowed)}",
                         f"{expression}.{name}")  # fmt: skip
            found = node[name]
            if isinstance(found, list):
                values.extend((v, f"{expression}.{name}[{i}]") for i, v in enumerate(found))
            else:
                values.append((found, f"{expression}.{name}"))
        name = str(element["path"]).rsplit(".", 1)[-1].removesuffix("[x]")
        where = f"{expression}.{name}"
        shadowed = not values and f"_{name}" in node  # a primitive with only extensions (json.html#primitive)
        self.cardinality(element, len(values) or int(shadowed), where)
        slices = self.structure.slices.get(child_id)
        if slices and element.get("slicing"):
            self.sliced(child_id, slices, values, where)
        else:
            for value, at in values:
                self.value(child_id, value, at)

    def cardinality(self, element: Element, count: int, expression: str, label: str = "") -> None:
        low, high = int(element.get("min", 0)), _max(element)
        if count < low:
            self.add("error", "required", f"{label}at least {low} expected, {count} found", expression)
        elif high is not None and count > high:
            self.add("error", "structure", f"{label}at most {high} allowed, {count} found", expression)

    def sliced(self, base_id: str, slice_ids: list[str], values: list[tuple[Any, str]], expression: str) -> None:
        slicing = self.structure.elements[base_id]["slicing"]
        matched: dict[str, list[tuple[Any, str]]] = {s: [] for s in slice_ids}
        for value, at in values:
            found = next((s for s in slice_ids if self.in_slice(s, slicing, value)), None)
            if found is not None:
                matched[found].append((value, at))
                continue
            if slicing.get("rules") == "closed":
                self.add("error", "structure", "matches no slice and the slicing is closed", at)
            self.value(base_id, value, at)
        for slice_id in slice_ids:
            element = self.structure.elements[slice_id]
            self.cardinality(element, len(matched[slice_id]), expression, f"slice {element.get('sliceName')}: ")
            for value, at in matched[slice_id]:
                self.value(slice_id, value, at, base_id)

    def in_slice(self, slice_id: str, slicing: dict[str, Any], value: Any) -> bool:
        """Whether ``value`` matches every discriminator of the slice (``value`` and ``pattern`` kinds)."""
        for discriminator in slicing.get("discriminator", []):
            path = str(discriminator.get("path", "$this"))
            target = self.structure.elements.get(slice_id if path == "$this" else f"{slice_id}.{path}")
            expected = fixed_value(target) if target is not None else None
            if expected is None or discriminator.get("type") not in ("value", "pattern"):
                return False
            if not any(satisfies(v, *expected) for v in at_path(value, path)):
                return False
        return True

    def value(self, element_id: str, value: Any, expression: str, fallback: str | None = None) -> None:
        element = self.structure.elements[element_id]
        expected = fixed_value(element)
        if expected is not None and not satisfies(value, *expected):
            kind, wanted = expected
            self.add("error", "value", f"the value must {'be' if kind == 'fixed' else 'match'} {wanted!r}", expression)
        binding = element.get("binding") or {}
        if binding.get("strength") == "required" and binding.get("valueSet"):
            self.bindings.append(BindingCheck(str(binding["valueSet"]), value, expression))
        self.references(element, value, expression)
        self.constraints(element, value, expression)
        if isinstance(value, dict):
            self.node(value, element_id, expression, fallback)

    def references(self, element: Element, value: Any, expression: str) -> None:
        targets = [
            p for t in element.get("type", []) if t.get("code") == "Reference" for p in t.get("targetProfile", [])
        ]
        if not targets or not isinstance(value, dict) or "reference" not in value:
            return
        allowed = {str(p).rsplit("/", 1)[-1] for p in targets}
        found = reference_type(value["reference"])
        if found is not None and "Resource" not in allowed and found not in allowed:
            self.add("error", "structure", f"a reference to a {found}: the allowed targets are {sorted(allowed)}",
                     f"{expression}.reference")  # fmt: skip

    def constraints(self, element: Element, value: Any, expression: str) -> None:
        for constraint in element.get("constraint", []):
            if constraint.get("key") in invariants.SKIPPED or not constraint.get("expression"):
                continue
            verdict = invariants.holds(constraint, value, self.resource)
            if verdict is None:
                self.add("warning", "informational", f"invariant {constraint.get('key')} was not evaluated", expression)
            elif not verdict:
                severity = "warning" if constraint.get("severity") == "warning" else "error"
                self.add(severity, "invariant", f"{constraint.get('key')}: {constraint.get('human', '')}", expression)


async def check(structure: Structure, resource: dict[str, Any], resolver: Resolver) -> list[Issue]:
    """The issues of ``resource`` against ``structure`` (empty: it conforms)."""
    walk = _Walk(structure, resource)
    if resource.get("resourceType") != structure.type:
        walk.add("error", "invalid", f"the profile is for {structure.type}", "resourceType")
        return walk.issues
    walk.constraints(structure.root, resource, structure.type)
    walk.node(resource, structure.type, structure.type)
    binding_issues = await Bindings(resolver).issues(walk.bindings)
    return walk.issues + [{**i, "diagnostics": f"{i['diagnostics']} ({structure.url})"} for i in binding_issues]
