"""What the IG package holds, gathered from what the code registers, never a copy kept by hand: the
profiles (``conformance.profiles``), DermBridge's own value sets, code systems and concept maps (the shipped
terminology under the IG's canonical; HL7's, SNOMED CT's, LOINC's and WHO's are their owners' to publish),
the search parameters and operation definitions the server defines (HL7's own stay in their packages), and
the requirements CapabilityStatement."""

from __future__ import annotations

from typing import Any

from conformance.capability import requirements_statement
from conformance.ig.profiles import profiles
from conformance.profiles import all_value_sets
from fhir_server.api.router import FhirRouter
from fhir_server.declared_profiles import CANONICAL_BASE
from fhir_server.definitions import search_parameter_definitions
from fhir_server.operation_definitions import served
from terminology.content import TYPES, base_content


def _own(resource: dict[str, Any]) -> bool:
    return str(resource.get("url", "")).startswith(f"{CANONICAL_BASE}/")


def terminology() -> list[dict[str, Any]]:
    """The CodeSystems, ValueSets and ConceptMaps DermBridge defines: the shipped ones and those the profiles bind."""
    content = base_content()
    return [*(r for kind in TYPES for r in content.resources(kind) if _own(r)), *all_value_sets()]


def search_parameters() -> list[dict[str, Any]]:
    """The SearchParameters the server defines beyond R4's (none yet: every one it indexes is R4's)."""
    return [p for p in search_parameter_definitions() if _own(p)]


def operation_definitions(router: FhirRouter) -> list[dict[str, Any]]:
    """The OperationDefinitions of the server's own operations, as ``GET OperationDefinition/{id}`` answers."""
    definitions = (served(op.definition) for op in router.operations.values())
    return sorted((d for d in definitions if _own(d)), key=lambda d: str(d["id"]))


def definitions(router: FhirRouter, version: str) -> list[dict[str, Any]]:
    """Every conformance resource of the package."""
    return [
        *profiles(),
        *terminology(),
        *search_parameters(),
        *operation_definitions(router),
        requirements_statement(router, version),
    ]
