"""One way to write a DermBridge profile: a StructureDefinition (structuredefinition.html) with a
differential of element ids and the snapshot generated from it (``conformance.profiles.snapshot``)."""

from __future__ import annotations

import re
from typing import Any

from conformance.profiles.snapshot import snapshot
from fhir_server import FHIR_VERSION
from fhir_server.declared_profiles import STRUCTURE_DEFINITION

Element = dict[str, Any]
PUBLISHER = "DermBridge"
_SLICE = re.compile(r":[^.]+")


def element(id: str, **fields: Any) -> Element:
    """A differential element; ``path`` is the id without its slice names (elementdefinition.html#id)."""
    return {"id": id, "path": _SLICE.sub("", id), **fields}


def sliced(id: str, discriminator: str, path: str, *, rules: str = "open", **fields: Any) -> Element:
    """An element sliced by one discriminator (profiling.html#discriminator): ``value`` or ``pattern``."""
    slicing = {"discriminator": [{"type": discriminator, "path": path}], "rules": rules}
    return element(id, slicing=slicing, **fields)


def reference(*types: str) -> list[dict[str, Any]]:
    """The type of a Reference element limited to ``types``."""
    return [{"code": "Reference", "targetProfile": [f"http://hl7.org/fhir/StructureDefinition/{t}" for t in types]}]


def invariant(key: str, human: str, expression: str, severity: str = "error") -> dict[str, Any]:
    return {"key": key, "severity": severity, "human": human, "expression": expression}


def profile(
    url: str,
    resource_type: str,
    title: str,
    description: str,
    differential: list[Element],
    constraints: tuple[dict[str, Any], ...] = (),
    **extra: Any,
) -> dict[str, Any]:
    """The full StructureDefinition: metadata, differential (``constraints``: the resource's invariants)
    and the generated snapshot."""
    id = url.rsplit("/", 1)[-1]
    if not url.startswith(STRUCTURE_DEFINITION):
        raise ValueError(f"{url} is not under {STRUCTURE_DEFINITION}")
    root = element(resource_type, short=title, definition=description)
    if constraints:
        root["constraint"] = list(constraints)
    differential = [root, *differential]
    return {
        "resourceType": "StructureDefinition",
        "id": id,
        "url": url,
        "version": "1.0.0",
        "name": "".join(part.capitalize() for part in id.split("-")),
        "title": title,
        "status": "active",
        "experimental": False,
        "publisher": PUBLISHER,
        "description": description,
        "fhirVersion": FHIR_VERSION,
        "kind": "resource",
        "abstract": False,
        "type": resource_type,
        "baseDefinition": f"http://hl7.org/fhir/StructureDefinition/{resource_type}",
        "derivation": "constraint",
        **extra,
        "snapshot": {"element": snapshot(resource_type, url, differential)},
        "differential": {"element": differential},
    }
