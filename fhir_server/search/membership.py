"""Which patients' compartments a resource belongs to (compartmentdefinition-patient), from its
own content: the references its compartment parameters hold."""

from __future__ import annotations

from typing import Any

from fhir_server.definitions import patient_compartment
from fhir_server.search.extract import parse_local_reference
from fhir_server.search.parameters import parameters_for


def compartment_patients(resource: dict[str, Any]) -> list[str]:
    """Patient ids, in the order of the compartment definition's parameters (subject/patient first)."""
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str):
        return []
    if resource_type == "Patient":
        return [str(resource["id"])] if resource.get("id") else []
    found: list[str] = []
    params = parameters_for(resource_type)
    for name in patient_compartment().get(resource_type) or ():
        param = params.get(name)
        if param is None or param.evaluate is None:
            continue
        for value, _ in param.evaluate(resource):
            ref = value.get("reference") if isinstance(value, dict) else None
            target = parse_local_reference(ref) if isinstance(ref, str) else None
            if target is not None and target[0] == "Patient" and target[1] not in found:
                found.append(target[1])
    return found
