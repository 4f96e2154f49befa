"""Writing a FHIR NPM package (packages.html; NPM Package Specification): a gzipped tar whose ``package/``
folder holds ``package.json``, one JSON file per resource named ``{resourceType}-{id}.json``, the examples in
``package/example/``, and an ``.index.json`` in both folders. The archive is reproducible: entries sorted,
fixed times and owners, so the same registries give the same bytes."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

INDEX_VERSION = 2
_INDEXED = ("url", "version", "kind", "type", "derivation", "supplements", "content")


def file_name(resource: dict[str, Any]) -> str:
    return f"{resource['resourceType']}-{resource['id']}.json"


def index(resources: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """``.index.json``: per file its name, resourceType, id and the canonical resource's identifying elements."""
    files = []
    for resource in resources:
        entry = {"filename": file_name(resource), "resourceType": resource["resourceType"], "id": resource["id"]}
        entry |= {key: resource[key] for key in _INDEXED if isinstance(resource.get(key), str)}
        files.append(entry)
    return {"index-version": INDEX_VERSION, "files": sorted(files, key=lambda f: f["filename"])}


def _json(document: dict[str, Any]) -> bytes:
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode()


def package_files(
    manifest: dict[str, Any], resources: list[dict[str, Any]], examples: list[dict[str, Any]]
) -> dict[str, bytes]:
    """Path in the archive -> content."""
    files = {"package/package.json": _json(manifest), "package/.index.json": _json(index(resources))}
    files |= {f"package/{file_name(r)}": _json(r) for r in resources}
    if examples:
        files["package/example/.index.json"] = _json(index(examples))
        files |= {f"package/example/{file_name(r)}": _json(r) for r in examples}
    names = [f"{r['resourceType']}/{r['id']}" for r in resources + examples]
    if len(set(names)) != len(names):
        raise ValueError(f"two package resources share a type and id: {sorted(n for n in names if names.count(n) > 1)}")
    return files


def write_package(path: Path, files: dict[str, bytes]) -> None:
    """The gzipped tar of ``files`` at ``path``."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(files[name]), 0o644, 0
            archive.addfile(info, io.BytesIO(files[name]))
    path.write_bytes(gzip.compress(raw.getvalue(), mtime=0))
