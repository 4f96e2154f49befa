"""The FHIR CapabilityStatement (capabilitystatement.html), generated from the registries:
the served resource types, their R4 search parameters and the registered operations."""

from __future__ import annotations

import functools
from typing import Any

from fhir_server import FHIR_VERSION
from fhir_server.api.router import FhirRouter
from fhir_server.definitions import resource_types, unsupported_r4_types
from fhir_server.operation_definitions import canonical
from fhir_server.search.parameters import parameters_for
from fhir_server.subscriptions.topics import CATALOGUE, SUBSCRIPTION_PROFILE, TOPIC_CANONICAL
from fhir_server.subscriptions.websocket import websocket_url

INTERACTIONS = (
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
)
_NOT_INDEXED = {"_text", "_content", "_query"}
WEBSOCKET = "http://hl7.org/fhir/StructureDefinition/capabilitystatement-websocket"  # on CapabilityStatement.rest


@functools.cache
def _rev_includes() -> dict[str, list[str]]:
    """``Source:param`` of every reference search parameter, by the types it may point to (search.html#revinclude)."""
    found: dict[str, list[str]] = {}
    for source in sorted(resource_types()):
        for code, p in sorted(parameters_for(source).items()):
            for target in p.targets if p.type == "reference" else ():
                found.setdefault(target, []).append(f"{source}:{code}")
    return found


def _operations(router: FhirRouter, base_url: str, resource_type: str | None) -> list[dict[str, Any]]:
    """The operations on a type (None: the system), each naming its definition's resolvable canonical."""
    return [
        {"name": op.name, "definition": canonical(op.definition, base_url)}
        for op in router.operations.values()
        if (resource_type in op.resource_types if resource_type else not op.resource_types)
    ]


def _resource(resource_type: str, router: FhirRouter, base_url: str) -> dict[str, Any]:
    params = [
        {"name": code, "definition": p.url, "type": p.type}
        for code, p in sorted(parameters_for(resource_type).items())
        if code not in _NOT_INDEXED and p.type != "special"
    ]
    entry: dict[str, Any] = {
        "type": resource_type,
        "profile": f"http://hl7.org/fhir/StructureDefinition/{resource_type}",
        "interaction": [
            {"code": code}
            for code in INTERACTIONS
            if resource_type != "AuditEvent" or code not in ("update", "patch", "delete")  # append-only
        ],
        "versioning": "versioned-update",
        "readHistory": True,
        "updateCreate": True,
        "conditionalCreate": True,
        "conditionalRead": "not-supported",
        "conditionalUpdate": True,
        "conditionalDelete": "multiple",
        "referencePolicy": ["literal", "logical", "local"],
        "searchInclude": [
            "*",
            *sorted(f"{resource_type}:{c}" for c, p in parameters_for(resource_type).items() if p.type == "reference"),
        ],
        "searchRevInclude": _rev_includes().get(resource_type, []),
        "searchParam": params,
    }
    if operations := _operations(router, base_url, resource_type):
        entry["operation"] = operations
    if resource_type == "Subscription":  # Subscriptions Backport IG: R4 servers advertise their topics here
        entry["extension"] = [{"url": TOPIC_CANONICAL, "valueCanonical": t.canonical} for t in CATALOGUE]
        entry["supportedProfile"] = [SUBSCRIPTION_PROFILE]
    return entry


def capability_statement(base_url: str, router: FhirRouter, software_version: str) -> dict[str, Any]:
    left_out = ", ".join(unsupported_r4_types())
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-23",
        "publisher": "DermBridge",
        "kind": "instance",
        "software": {"name": "DermBridge", "version": software_version},
        "implementation": {"description": "DermBridge FHIR R4 server", "url": base_url},
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [
            {
                "extension": [{"url": WEBSOCKET, "valueUri": websocket_url(base_url)}],
                "mode": "server",
                "documentation": (
                    "FHIR R4 (4.0.1) JSON. Resource types R4 has but R4B dropped are not served: " + left_out + "."
                ),
                "resource": [_resource(t, router, base_url) for t in sorted(resource_types())],
                "interaction": [{"code": c} for c in ("transaction", "batch", "search-system", "history-system")],
                "searchParam": [
                    {"name": "_id", "type": "token", "definition": "http://hl7.org/fhir/SearchParameter/Resource-id"},
                    {
                        "name": "_lastUpdated",
                        "type": "date",
                        "definition": "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated",
                    },
                ],
                "operation": _operations(router, base_url, None),
                "compartment": ["http://hl7.org/fhir/CompartmentDefinition/patient"],
                "security": _security(base_url),
            }
        ],
    }


def _security(base_url: str) -> dict[str, Any]:
    """SMART on FHIR OAuth2: the token endpoint, as the oauth-uris extension declares it."""
    root = base_url.rsplit("/fhir/", 1)[0]
    return {
        "cors": False,
        "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                  "code": "SMART-on-FHIR"}]}],
        "description": "OAuth2 bearer tokens with SMART v2 scopes (client credentials, SMART Backend Services); "
        "see .well-known/smart-configuration",
        "extension": [{"url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                       "extension": [{"url": "token", "valueUri": f"{root}/auth/token"}]}],
    }  # fmt: skip
