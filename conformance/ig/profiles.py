"""The profiles ``conformance.profiles`` registers, by the resource type each constrains: what the
CapabilityStatement lists as ``supportedProfile`` and the IG package ships."""

from __future__ import annotations

import functools
from typing import Any

from conformance.profiles import all_profiles


@functools.cache
def _profiles() -> tuple[dict[str, Any], ...]:
    return tuple(all_profiles())


def profiles() -> list[dict[str, Any]]:
    """Every StructureDefinition the server defines (profiles of resources and of data types, extensions)."""
    return list(_profiles())


@functools.cache
def supported_profiles() -> dict[str, list[str]]:
    """Resource type -> the canonical URLs of the resource profiles on it (capabilitystatement.html
    ``rest.resource.supportedProfile``)."""
    found: dict[str, list[str]] = {}
    for profile in _profiles():
        if profile.get("kind") == "resource" and profile.get("derivation") == "constraint":
            found.setdefault(str(profile["type"]), []).append(str(profile["url"]))
    return {resource_type: sorted(urls) for resource_type, urls in found.items()}
