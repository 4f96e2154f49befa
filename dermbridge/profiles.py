"""Wires DermBridge's profiles into the FHIR server: ``conformance.profiles`` registered with the validator
(``fhir_server.profiling``, which may not import ``conformance``), ``$validate`` on every type, the
tenant's ``StructureDefinition/$profile-enforcement``, and the ``meta.profile`` check on clients' writes."""

from __future__ import annotations

from conformance.profiles import all_profiles, all_value_sets
from fhir_server.api.router import FhirRouter, Operation
from fhir_server.definitions import resource_types
from fhir_server.profiling.enforcement import ENFORCEMENT_DEFINITION, check_claimed_profiles, enforcement_operation
from fhir_server.profiling.operation import VALIDATE_DEFINITION, validate_operation
from fhir_server.profiling.registry import register_profiles
from fhir_server.write_guards import register_content_check


def register_conformance_profiles(router: FhirRouter) -> None:
    register_profiles(all_profiles(), all_value_sets())
    types = tuple(sorted(resource_types()))
    router.register(Operation("validate", types, None, validate_operation, VALIDATE_DEFINITION))
    router.register(
        Operation(
            "profile-enforcement", ("StructureDefinition",), False, enforcement_operation, ENFORCEMENT_DEFINITION, True
        )
    )
    register_content_check(check_claimed_profiles)
