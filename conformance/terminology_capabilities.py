"""``GET metadata?mode=terminology``: the TerminologyCapabilities (terminologycapabilities.html), generated
from what is registered: the terminology operations the router has (``$expand``, ``$validate-code``,
``$translate``, ``$closure``) and the code systems the server can read, as the terminology service lists them."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from fhir_server.api.router import FhirRouter

CodeSystems = Callable[[], Iterable[tuple[str, str | None]]]  # (canonical URL, version or None)


def _no_code_systems() -> Iterable[tuple[str, str | None]]:
    return ()


def _code_system(uri: str, version: str | None) -> dict[str, Any]:
    return {"uri": uri, "version": [{"code": version}]} if version else {"uri": uri}


def terminology_capabilities(
    base_url: str, router: FhirRouter, software_version: str, code_systems: CodeSystems = _no_code_systems
) -> dict[str, Any]:
    """A TerminologyCapabilities that states only what is served: an operation's element appears only when the
    operation is registered, and each readable code system once."""
    operations = set(router.operations)
    listed = {uri: version for uri, version in code_systems()}
    statement: dict[str, Any] = {
        "resourceType": "TerminologyCapabilities",
        "status": "active",
        "date": "2026-11-30",
        "publisher": "DermBridge",
        "kind": "instance",
        "software": {"name": "DermBridge", "version": software_version},
        "implementation": {"description": "DermBridge FHIR R4 terminology", "url": base_url},
        "description": "CodeSystem, ValueSet and ConceptMap are stored, read and searched as ordinary resources"
        + ("." if operations & {"lookup", "expand", "validate-code", "translate"} else "; no terminology operation"
           " is served yet."),
    }  # fmt: skip
    if listed:
        statement["codeSystem"] = [_code_system(uri, listed[uri]) for uri in sorted(listed)]
    if "expand" in operations:
        text_filter = "matches displays and designations"
        statement["expansion"] = {"hierarchical": False, "paging": True, "textFilter": text_filter}
    if "validate-code" in operations:
        statement["validateCode"] = {"translations": False}
    if "translate" in operations:
        statement["translation"] = {"needsMap": False}  # without a map: those whose source is the coding's system
    if "closure" in operations:
        statement["closure"] = {"translation": False}
    return statement
