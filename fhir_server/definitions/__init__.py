"""The official FHIR R4 definitions the server runs on, vendored by ``tools/vendor_definitions.py``."""

from __future__ import annotations

import functools
import gzip
import json
from importlib import resources
from typing import Any

from terminology.bindings import Binding


def _load(name: str) -> Any:
    raw = resources.files(__package__).joinpath("data", name).read_bytes()
    return json.loads(gzip.decompress(raw))


@functools.cache
def resource_types() -> frozenset[str]:
    """Every resource type this server serves: R4's, less the R4-only types R4B dropped."""
    return frozenset(_load("resource-types.json.gz")["supported"])


@functools.cache
def unsupported_r4_types() -> tuple[str, ...]:
    """R4 types left out (the MedicinalProduct family and friends), named in the CapabilityStatement."""
    return tuple(_load("resource-types.json.gz")["r4_only_unsupported"])


@functools.cache
def search_parameter_definitions() -> tuple[dict[str, Any], ...]:
    """The R4 SearchParameter resources, trimmed to the elements search needs."""
    return tuple(_load("search-parameters.json.gz"))


@functools.cache
def patient_compartment() -> dict[str, tuple[str, ...]]:
    """Resource type -> the search parameters that put it in a Patient's compartment."""
    return {k: tuple(v) for k, v in _load("compartment-patient.json.gz").items()}


@functools.cache
def json_schema() -> dict[str, Any]:
    """The R4 JSON schema (pruned to R4's own elements)."""
    schema: dict[str, Any] = _load("fhir.schema.json.gz")
    return schema


@functools.cache
def summary_elements(resource_type: str) -> tuple[frozenset[str], frozenset[str]]:
    """(summary, mandatory) top-level element names of a type; choice elements without ``[x]``."""
    entry = _summary_table().get(resource_type, {"summary": [], "mandatory": []})
    return frozenset(entry["summary"]), frozenset(entry["mandatory"])


@functools.cache
def _summary_table() -> dict[str, Any]:
    table: dict[str, Any] = _load("summary-elements.json.gz")
    return table


@functools.cache
def choice_elements() -> frozenset[str]:
    """Names of R4's choice elements without ``[x]`` (value, effective, onset...)."""
    return frozenset(_load("choice-elements.json.gz"))


@functools.cache
def base_bindings(resource_type: str) -> tuple[Binding, ...]:
    """The required, extensible and preferred bindings of a type's coded elements in the R4 specification,
    those inside the data types it uses included (``Patient.identifier.type``)."""
    table: dict[str, list[list[str]]] = _bindings_table()
    return tuple(Binding(path, strength, value_set) for path, strength, value_set in table.get(resource_type, []))  # type: ignore[arg-type]


@functools.cache
def _bindings_table() -> dict[str, list[list[str]]]:
    table: dict[str, list[list[str]]] = _load("bindings.json.gz")
    return table


@functools.cache
def base_structures() -> dict[str, dict[str, Any]]:
    """The R4 StructureDefinitions (snapshot trimmed) of the profiled resource types and every complex
    data type, by type name: what profile snapshots are generated from and what ``$validate`` walks."""
    found: dict[str, dict[str, Any]] = _load("structure-definitions.json.gz")
    return found
