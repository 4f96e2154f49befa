"""``dermbridge conformance package``: the whole IG package from the registries, written to ``package.tgz``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conformance.ig.content import definitions
from conformance.ig.examples import examples
from conformance.ig.guide import implementation_guide, package_json
from conformance.ig.npm import package_files, write_package
from conformance.ig.profiles import profiles
from fhir_server.api.router import FhirRouter

PACKAGE_FILE = "package.tgz"


def package_contents(router: FhirRouter, version: str) -> dict[str, bytes]:
    """Path in the archive -> content: the ImplementationGuide, every definition, one example per profile."""
    resources = definitions(router, version)
    shown: list[dict[str, Any]] = examples(profiles())
    guide = implementation_guide(version, resources, shown)
    return package_files(package_json(version), [guide, *resources], shown)


def build_package(router: FhirRouter, version: str, out: Path) -> Path:
    """Write ``out/package.tgz`` and answer its path."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / PACKAGE_FILE
    write_package(path, package_contents(router, version))
    return path
