"""``OperationDefinition``s of the server's own operations (operationdefinition.html), built in one way
so that every operation the CapabilityStatement lists says the same things the same way."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from fhir_server.declared_profiles import CANONICAL_BASE

Level = Literal["system", "type", "instance"]
BASE = "urn:dermbridge:OperationDefinition"  # how the code names its own definitions; served under the IG's canonical


def parameter(name: str, use: Literal["in", "out"], type: str | None = None, *, min: int = 0, max: str = "1",
              **extra: Any) -> dict[str, Any]:  # fmt: skip
    """One ``OperationDefinition.parameter``; ``extra`` carries e.g. ``targetProfile`` or ``part``."""
    found: dict[str, Any] = {"name": name, "use": use, "min": min, "max": max}
    if type is not None:
        found["type"] = type
    return found | extra


def returns(type: str) -> dict[str, Any]:
    """The ``return`` out-parameter of an operation answering one resource (operations.html#response)."""
    return parameter("return", "out", type, min=1)


def operation_definition(
    code: str,
    *,
    level: Level,
    description: str,
    parameters: Sequence[dict[str, Any]],
    resource: Sequence[str] = (),
    affects_state: bool = True,
    name: str | None = None,
    title: str | None = None,
    id: str | None = None,
    url: str | None = None,
) -> dict[str, Any]:
    """An operation invoked at one ``level``; its id is ``<Type>-<code>`` for a single-type operation."""
    id = id or (f"{resource[0]}-{code}" if len(resource) == 1 else code)
    definition: dict[str, Any] = {
        "resourceType": "OperationDefinition",
        "id": id,
        "url": url or f"{BASE}/{id}",
        "name": name or "".join(part.capitalize() for part in code.split("-")),
        "status": "active",
        "kind": "operation",
        "description": description,
        "code": code,
        "system": level == "system",
        "type": level == "type",
        "instance": level == "instance",
        "affectsState": affects_state,
        "parameter": list(parameters),
    }
    if title:
        definition["title"] = title
    if resource:
        definition["resource"] = list(resource)
    return definition


def canonical(definition: dict[str, Any]) -> str:
    """The definition's canonical URL: HL7's own where the operation is HL7's (``Patient-everything``), else
    the implementation guide's ``{CANONICAL_BASE}/OperationDefinition/{id}``; either way
    ``GET [base]/OperationDefinition/{id}`` on the server answers it (operations.html#defining), and the IG
    package holds the server's own."""
    url = str(definition["url"])
    return f"{CANONICAL_BASE}/OperationDefinition/{definition['id']}" if url.startswith(BASE) else url


def served(definition: dict[str, Any]) -> dict[str, Any]:
    """The definition as ``GET OperationDefinition/{id}`` answers it and the IG package holds it (canonical ``url``)."""
    return definition | {"url": canonical(definition)}
