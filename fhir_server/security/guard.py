"""Enforcement of an access token's scopes on FHIR interactions.

``require`` answers 403 when no scope grants the permission on the type, and tells the caller
whether the grant is whole or bounded to the token's patient compartment; ``in_compartment``
decides that membership for one resource from the compartment definition's parameters.
"""

from __future__ import annotations

from typing import Any, Literal

from fhir_server.errors import forbidden
from fhir_server.search.membership import compartment_patients
from fhir_server.security.scopes import Access, Permission

VERBS = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}


def require(access: Access | None, resource_type: str, permission: Permission) -> Literal["all", "patient"]:
    """``all`` or ``patient`` (bounded to ``access.patient``); 403 when the scopes give nothing."""
    if access is None:
        return "all"
    decision = access.decide(resource_type, permission)
    if decision == "none":
        raise forbidden(f"the access token's scopes do not allow {VERBS[permission]} on {resource_type}")
    return decision


def allowed(access: Access | None, resource_type: str, permission: Permission) -> bool:
    return access is None or access.decide(resource_type, permission) != "none"


def in_compartment(resource: dict[str, Any], patient_id: str) -> bool:
    """Whether ``resource`` belongs to the compartment of Patient ``patient_id``."""
    return patient_id in compartment_patients(resource)


def readable(access: Access | None, resource: dict[str, Any]) -> bool:
    """Whether the bearer may see ``resource`` (used to filter included and $everything results)."""
    if access is None:
        return True
    resource_type = str(resource.get("resourceType"))
    decision = access.decide(resource_type, "r")
    if decision == "patient":
        assert access.patient is not None
        return in_compartment(resource, access.patient)
    return decision == "all"
