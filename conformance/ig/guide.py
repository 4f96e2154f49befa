"""What the implementation guide says about itself: its package name and canonical, the ``package.json``
manifest and the ``ImplementationGuide`` resource (implementationguide.html) that lists the package's
resources and which profile each example illustrates."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fhir_server import FHIR_VERSION
from fhir_server.declared_profiles import CANONICAL_BASE

PACKAGE_ID = "dermbridge.fhir"
IG_URL = f"{CANONICAL_BASE}/ImplementationGuide/{PACKAGE_ID}"  # packages.html: {canonical}/ImplementationGuide/{id}
SERVER_STATEMENT = f"{CANONICAL_BASE}/CapabilityStatement/dermbridge-server"  # kind requirements, in the package
CORE_PACKAGE = ("hl7.fhir.r4.core", "4.0.1")
LICENSE = "CC0-1.0"
TITLE = "DermBridge FHIR R4 Implementation Guide"
DESCRIPTION = (
    "What a DermBridge server writes and expects: profiles of the dermatology case, its lesions, images, AI and "
    "clinician findings, the AI device and provenance, consent and review tasks; the value sets and concept map "
    "they bind; the server's operations; its CapabilityStatement."
)
COPYRIGHT = (
    "CC0 for DermBridge's own content. Value sets use SNOMED CT codes (SNOMED International; an Affiliate Licence "
    "is needed outside member countries) and LOINC codes (copyright Regenstrief Institute, Inc., free under "
    "http://loinc.org/license)."
)


def package_json(version: str) -> dict[str, Any]:
    """``package/package.json`` (NPM Package Specification: name, version, fhirVersions, dependencies...)."""
    return {
        "name": PACKAGE_ID,
        "version": version,
        "type": "fhir.ig",
        "canonical": CANONICAL_BASE,
        "url": CANONICAL_BASE,
        "title": TITLE,
        "description": DESCRIPTION,
        "fhirVersions": [FHIR_VERSION],
        "dependencies": {CORE_PACKAGE[0]: CORE_PACKAGE[1]},
        "author": "DermBridge",
        "license": LICENSE,
        "jurisdiction": "http://unstats.un.org/unsd/methods/m49/m49.htm#001",
    }


def _reference(resource: dict[str, Any]) -> dict[str, str]:
    return {"reference": f"{resource['resourceType']}/{resource['id']}"}


def _entry(resource: dict[str, Any]) -> dict[str, Any]:
    entry = {
        "reference": _reference(resource),
        "name": str(resource.get("title") or resource.get("name") or resource["id"]),
    }
    if description := resource.get("description"):
        entry["description"] = str(description)
    return entry | {"exampleBoolean": False}


def _example(resource: dict[str, Any]) -> dict[str, Any]:
    profiles = resource.get("meta", {}).get("profile") or []
    entry: dict[str, Any] = {"reference": _reference(resource), "name": f"{resource['resourceType']} {resource['id']}"}
    return entry | ({"exampleCanonical": profiles[0]} if profiles else {"exampleBoolean": True})


def implementation_guide(
    version: str, definitions: Iterable[dict[str, Any]], examples: Iterable[dict[str, Any]]
) -> dict[str, Any]:
    """The ``ImplementationGuide`` resource: every definition of the package, then each example with the
    profile it illustrates (``exampleCanonical``)."""
    return {
        "resourceType": "ImplementationGuide",
        "id": PACKAGE_ID,
        "url": IG_URL,
        "version": version,
        "name": "DermBridge",
        "title": TITLE,
        "status": "active",
        "date": "2026-11-30",
        "publisher": "DermBridge",
        "description": DESCRIPTION,
        "copyright": COPYRIGHT,
        "packageId": PACKAGE_ID,
        "license": LICENSE,
        "fhirVersion": [FHIR_VERSION],
        "definition": {
            "resource": [_entry(r) for r in definitions] + [_example(r) for r in examples],
        },
    }
