"""Reading terminology a user supplies: a FHIR NPM package (``package.tgz``, packages.html: JSON resources
under ``package/``), a Bundle, or a single CodeSystem/ValueSet/ConceptMap JSON file. Only those three
types are kept; everything read is bounded (members, bytes)."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from terminology.errors import invalid, too_costly

TYPES = ("CodeSystem", "ValueSet", "ConceptMap")
MAX_MEMBERS = 100_000  # files of one package
MAX_MEMBER_BYTES = 256 * 1024 * 1024  # one JSON file


def read_terminology(path: Path) -> list[dict[str, Any]]:
    """The CodeSystems, ValueSets and ConceptMaps in ``path`` (.tgz/.tar.gz package, or .json)."""
    if path.name.endswith((".tgz", ".tar.gz")):
        return list(_from_package(path))
    if path.stat().st_size > MAX_MEMBER_BYTES:
        raise too_costly(f"{path.name} is larger than {MAX_MEMBER_BYTES} bytes")
    return list(_resources(_parse(path.read_bytes(), path.name)))


def _parse(raw: bytes, name: str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise invalid(f"{name} is not JSON: {error}") from error


def _resources(document: Any) -> Iterator[dict[str, Any]]:
    if not isinstance(document, dict):
        return
    if document.get("resourceType") == "Bundle":
        for entry in document.get("entry") or []:
            resource = (entry or {}).get("resource") if isinstance(entry, dict) else None
            if isinstance(resource, dict) and resource.get("resourceType") in TYPES:
                yield resource
    elif document.get("resourceType") in TYPES:
        yield document


def _from_package(path: Path) -> Iterator[dict[str, Any]]:
    try:
        with tarfile.open(path, "r:gz") as archive:
            for count, member in enumerate(archive):
                if count >= MAX_MEMBERS:
                    raise too_costly(f"{path.name} has more than {MAX_MEMBERS} files")
                if not member.isfile() or not member.name.endswith(".json") or "/examples/" in member.name:
                    continue
                if member.size > MAX_MEMBER_BYTES:
                    raise too_costly(f"{member.name} is larger than {MAX_MEMBER_BYTES} bytes")
                handle = archive.extractfile(member)
                if handle is None or Path(member.name).name in ("package.json", ".index.json"):
                    continue
                yield from _resources(_parse(handle.read(), member.name))
    except tarfile.TarError as error:
        raise invalid(f"{path.name} is not a gzipped tar package: {error}") from error
