"""The FHIR CapabilityStatement (capabilitystatement.html), generated from the registries: the served
resource types, their R4 search parameters, the profiles (``conformance.profiles``) and the registered
operations. The server's own statement (``kind: instance``) instantiates the one the IG package holds
(``kind: requirements``), which is the same statement without this server's addresses."""

from __future__ import annotations

import functools
from typing import Any

from conformance.ig.guide import IG_URL, SERVER_STATEMENT
from conformance.ig.profiles import supported_profiles
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


def _operations(router: FhirRouter, resource_type: str | None) -> list[dict[str, Any]]:
    """The operations on a type (None: the system), each naming its definition's canonical, which
    ``GET [base]/OperationDefinition/{id}`` answers without a token."""
    return [
        {"name": op.name, "definition": canonical(op.definition)}
        for op in router.operations.values()
        if (resource_type in op.resource_types if resource_type else not op.resource_types)
    ]


def _resource(resource_type: str, router: FhirRouter) -> dict[str, Any]:
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
    if operations := _operations(router, resource_type):
        entry["operation"] = operations
    supported = supported_profiles().get(resource_type, [])
    if resource_type == "Subscription":  # Subscriptions Backport IG: R4 servers advertise their topics here
        entry["extension"] = [{"url": TOPIC_CANONICAL, "valueCanonical": t.canonical} for t in CATALOGUE]
        supported = [SUBSCRIPTION_PROFILE, *supported]
    if supported:
        entry["supportedProfile"] = supported
    return entry


def capability_statement(base_url: str, router: FhirRouter, software_version: str) -> dict[str, Any]:
    """This server's statement: what it serves at ``base_url``, instantiating the IG's statement."""
    statement = _statement(router, base_url)
    statement["rest"][0]["extension"] = [{"url": WEBSOCKET, "valueUri": websocket_url(base_url)}]
    return statement | {
        "kind": "instance",
        "instantiates": [SERVER_STATEMENT],
        "software": {"name": "DermBridge", "version": software_version},
        "implementation": {"description": "DermBridge FHIR R4 server", "url": base_url},
    }


def requirements_statement(router: FhirRouter, version: str) -> dict[str, Any]:
    """The statement the IG package holds (``kind: requirements``): every DermBridge server's capabilities,
    without the addresses of one."""
    return _statement(router, None) | {
        "id": SERVER_STATEMENT.rsplit("/", 1)[1],
        "url": SERVER_STATEMENT,
        "version": version,
        "name": "DermBridgeServer",
        "title": "DermBridge FHIR R4 server",
        "kind": "requirements",
        "description": "What a DermBridge FHIR R4 server serves: its resource types, search parameters, "
        "profiles and operations.",
    }


def _statement(router: FhirRouter, base_url: str | None) -> dict[str, Any]:
    left_out = ", ".join(unsupported_r4_types())
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-30",
        "publisher": "DermBridge",
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "json"],
        "patchFormat": ["application/json-patch+json"],
        "implementationGuide": [IG_URL],
        "rest": [
            {
                "mode": "server",
                "documentation": (
                    "FHIR R4 (4.0.1) JSON. Resource types R4 has but R4B dropped are not served: " + left_out + "."
                ),
                "resource": [_resource(t, router) for t in sorted(resource_types())],
                "interaction": [{"code": c} for c in ("transaction", "batch", "search-system", "history-system")],
                "searchParam": [
                    {"name": "_id", "type": "token", "definition": "http://hl7.org/fhir/SearchParameter/Resource-id"},
                    {
                        "name": "_lastUpdated",
                        "type": "date",
                        "definition": "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated",
                    },
                ],
                "operation": _operations(router, None),
                "compartment": ["http://hl7.org/fhir/CompartmentDefinition/patient"],
                "security": _security(base_url),
            }
        ],
    }


def _security(base_url: str | None) -> dict[str, Any]:
    """SMART on FHIR OAuth2: the token endpoint (of the server at ``base_url``), as the oauth-uris extension
    declares it."""
    security = {
        "cors": False,
        "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                  "code": "SMART-on-FHIR"}]}],
        "description": "OAuth2 bearer tokens with SMART v2 scopes (client credentials, SMART Backend Services); "
        "see .well-known/smart-configuration",
    }  # fmt: skip
    if base_url is None:
        return security
    token = f"{base_url.rsplit('/fhir/', 1)[0]}/auth/token"
    oauth = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
    return security | {"extension": [{"url": oauth, "extension": [{"url": "token", "valueUri": token}]}]}
