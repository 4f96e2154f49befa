"""``dermbridge conformance package``: the whole IG package from the registries, written to ``package.tgz``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conformance.ig.content import definitions
from conformance.ig.guide import implementation_guide, package_json
from conformance.ig.npm import package_files, write_package
from fhir_server.api.router import FhirRouter

PACKAGE_FILE = "package.tgz"


def package_contents(router: FhirRouter, version: str, examples: list[dict[str, Any]]) -> dict[str, bytes]:
    """Path in the archive -> content: the ImplementationGuide, every definition, the examples."""
    resources = definitions(router, version)
    guide = implementation_guide(version, resources, examples)
    return package_files(package_json(version), [guide, *resources], examples)


def build_package(router: FhirRouter, version: str, examples: list[dict[str, Any]], out: Path) -> Path:
    """Write ``out/package.tgz`` and answer its path."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / PACKAGE_FILE
    write_package(path, package_contents(router, version, examples))
    return path
