"""Which patients' compartments a resource belongs to (compartmentdefinition-patient), from its
own content: the references its compartment parameters hold.

Two readings of the definition. ``compartment_patients`` follows every parameter the definition
lists (an Observation's ``performer`` too): it names the data key a resource is sealed under.
``owners`` follows only the parameters that say whose record a resource is (``patient``,
``subject``, ``beneficiary``, ``individual``): a ``patient/`` scope reads and writes what its
patient *owns*, never what merely names it as a performer or author (SMART App Launch v2,
scopes-and-launch-context.html#patient-specific-scopes).
"""

from __future__ import annotations

import functools
from typing import Any

from fhir_server.definitions import patient_compartment
from fhir_server.search.extract import parse_local_reference
from fhir_server.search.parameters import parameters_for
from fhir_server.storage.query import AnyClause, Clause, IdClause, ParamClause, ReferenceMatch

OWNER_PARAMETERS = frozenset({"patient", "subject", "beneficiary", "individual"})


def compartment_patients(resource: dict[str, Any]) -> list[str]:
    """Patient ids, in the order of the compartment definition's parameters (subject/patient first)."""
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str):
        return []
    if resource_type == "Patient":
        return [str(resource["id"])] if resource.get("id") else []
    return _referenced_patients(resource, resource_type, patient_compartment().get(resource_type) or ())


@functools.cache
def owner_parameters(resource_type: str) -> tuple[str, ...]:
    """The type's Patient compartment parameters that name whose record it is (none: nobody owns it)."""
    return tuple(p for p in patient_compartment().get(resource_type) or () if p in OWNER_PARAMETERS)


def owners(resource: dict[str, Any]) -> set[str]:
    """The patients whose record ``resource`` is: a Patient itself, or its subject/patient references."""
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str):
        return set()
    if resource_type == "Patient":
        return {str(resource["id"])} if resource.get("id") else set()
    return set(_referenced_patients(resource, resource_type, owner_parameters(resource_type)))


def owner_clause(resource_type: str, patient_id: str) -> Clause | None:
    """The search clause for "owned by Patient ``patient_id``"; None when the type has no owner."""
    if resource_type == "Patient":
        return IdClause((patient_id,))
    target = (ReferenceMatch("Patient", patient_id),)
    alternatives = tuple(ParamClause(p, "reference", target) for p in owner_parameters(resource_type))
    if not alternatives:
        return None
    return alternatives[0] if len(alternatives) == 1 else AnyClause(alternatives)


def _referenced_patients(resource: dict[str, Any], resource_type: str, names: tuple[str, ...]) -> list[str]:
    found: list[str] = []
    params = parameters_for(resource_type)
    for name in names:
        param = params.get(name)
        if param is None or param.evaluate is None:
            continue
        for value, _ in param.evaluate(resource):
            ref = value.get("reference") if isinstance(value, dict) else None
            target = parse_local_reference(ref) if isinstance(ref, str) else None
            if target is not None and target[0] == "Patient" and target[1] not in found:
                found.append(target[1])
    return found
