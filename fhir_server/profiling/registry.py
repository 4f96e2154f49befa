"""The StructureDefinitions the server validates against: the R4 base definitions of the profiled types
(vendored, ``fhir_server.definitions``) and the profiles the composition root registers
(``conformance.profiles``), each found by canonical URL (with or without ``|version``).

A registered profile that declares ``compliesWithProfile`` (an extension of the FHIR extensions pack) makes
the profile it names recognised: a claim of the AI Transparency IG's AI-Device is not refused as unknown,
but not checked either (DermBridge's profile is stricter than the IG's, and the IG's own is not held).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

from fhir_server.definitions import base_structures, resource_types
from fhir_server.profiling.structure import Structure
from terminology.content import BaseContent

CORE = "http://hl7.org/fhir/StructureDefinition/"
COMPLIES_WITH = "http://hl7.org/fhir/StructureDefinition/structuredefinition-compliesWithProfile"


class Profiles:
    """Profiles by canonical URL, and the value sets they bind to that no other content holds."""

    def __init__(self) -> None:
        self.definitions: dict[str, dict[str, Any]] = {}
        self._structures: dict[str, Structure] = {}
        self.complied_with: dict[str, str] = {}  # a profile not held -> the registered one that complies with it
        self.value_sets = BaseContent([])

    def register(self, profiles: Iterable[dict[str, Any]], value_sets: Iterable[dict[str, Any]] = ()) -> None:
        for definition in profiles:
            url = str(definition["url"])
            self.definitions[url] = definition
            self._structures.pop(url, None)
            for extension in definition.get("extension", []):
                if extension.get("url") == COMPLIES_WITH and extension.get("valueCanonical"):
                    self.complied_with[str(extension["valueCanonical"])] = url
        self.value_sets = BaseContent([*self.value_sets.resources("ValueSet"), *value_sets])

    def structure(self, url: str) -> Structure | None:
        """The structure of a profile or an R4 type's base definition; None when the URL is unknown."""
        url = url.split("|", 1)[0]
        if url not in self._structures:
            definition = self.definitions.get(url) or _core(url)
            if definition is None:
                return None
            self._structures[url] = Structure(definition)
        return self._structures[url]

    def known(self, url: str) -> bool:
        """A URL the server validates against, an R4 type's own definition, or a profile a registered one
        complies with."""
        url = url.split("|", 1)[0]
        return url in self.definitions or url in self.complied_with or _core_type(url) is not None

    def for_type(self, resource_type: str) -> list[str]:
        """The registered profiles of ``resource_type`` (the CapabilityStatement's ``supportedProfile``)."""
        return [url for url, d in self.definitions.items() if d.get("type") == resource_type]


def _core_type(url: str) -> str | None:
    name = url[len(CORE) :] if url.startswith(CORE) else ""
    return name if name in resource_types() else None


def _core(url: str) -> dict[str, Any] | None:
    name = _core_type(url)
    return base_structures().get(name) if name else None


@functools.cache
def profiles() -> Profiles:
    """The process's profiles (registered once by the composition root, read everywhere)."""
    return Profiles()


def register_profiles(definitions: Iterable[dict[str, Any]], value_sets: Iterable[dict[str, Any]] = ()) -> None:
    """Registers profiles (full StructureDefinitions with snapshot) and the value sets they bind to."""
    profiles().register(definitions, value_sets)
