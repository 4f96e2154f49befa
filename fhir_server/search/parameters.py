"""The search parameters of every resource type, from the official R4 SearchParameter definitions."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from fhir_server.definitions import resource_types, search_parameter_definitions
from fhir_server.search.paths import Evaluator, compile_for_type, compile_relative
from fhir_server.storage.query import IndexKind

# Parameters that every type has but that are answered from the resource row, not the index.
RESULT_PARAMETERS = frozenset(
    {
        "_count",
        "_sort",
        "_include",
        "_revinclude",
        "_summary",
        "_elements",
        "_total",
        "_format",
        "_pretty",
        "_contained",
        "_containedType",
        "_offset",
        "_snapshot",
        "_type",
        "_since",
    }
)
SPECIAL_UNSUPPORTED = frozenset({"_text", "_content", "_query", "_filter", "_list"})


@dataclass(frozen=True, slots=True)
class Component:
    code: str  # the composite's code + "#" + position: the index rows' param
    kind: IndexKind
    evaluate: Evaluator


@dataclass(frozen=True, slots=True)
class SearchParameter:
    code: str
    type: str  # number | date | string | token | reference | composite | quantity | uri | special
    url: str
    evaluate: Evaluator | None
    targets: tuple[str, ...] = ()
    components: tuple[Component, ...] = field(default=())

    @property
    def kind(self) -> IndexKind:
        if self.type not in ("number", "date", "string", "token", "reference", "quantity", "uri"):
            raise ValueError(f"{self.code} is a {self.type} parameter")
        return self.type  # type: ignore[return-value]


def _by_url() -> dict[str, dict[str, Any]]:
    return {d["url"]: d for d in search_parameter_definitions()}


def _component_kind(definition_url: str, base: str, by_url: dict[str, dict[str, Any]]) -> str:
    found = by_url.get(definition_url)
    if found is not None:
        return str(found["type"])
    # Some component definitions point at a per-type URL of a shared parameter: ...-<code>.
    code = definition_url.rsplit("/", 1)[-1].split("-", 1)[-1]
    for definition in search_parameter_definitions():
        if definition["code"] == code and base in definition["base"]:
            return str(definition["type"])
    return "token"


@functools.cache
def parameters_for(resource_type: str) -> dict[str, SearchParameter]:
    """Every search parameter of a type (its own and the Resource-level ones), by code."""
    by_url = _by_url()
    found: dict[str, SearchParameter] = {}
    for definition in search_parameter_definitions():
        bases = definition["base"]
        if resource_type not in bases and not {"Resource", "DomainResource"} & set(bases):
            continue
        code = definition["code"]
        expression = definition.get("expression")
        evaluate = compile_for_type(expression, resource_type) if expression else None
        if expression and evaluate is None:
            continue
        components: tuple[Component, ...] = ()
        if definition["type"] == "composite":
            components = tuple(
                Component(
                    f"{code}#{position}",
                    _component_kind(part["definition"], resource_type, by_url),  # type: ignore[arg-type]
                    compile_relative(part["expression"]),
                )
                for position, part in enumerate(definition.get("component", []))
            )
        found[code] = SearchParameter(
            code=code,
            type=definition["type"],
            url=definition["url"],
            evaluate=evaluate,
            targets=tuple(definition.get("target", ())),
            components=components,
        )
    return found


def lookup(resource_type: str, code: str) -> SearchParameter | None:
    return parameters_for(resource_type).get(code)


def all_types() -> frozenset[str]:
    return resource_types()
