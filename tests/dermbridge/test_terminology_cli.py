"""``dermbridge terminology load`` in a real subprocess: a FHIR NPM package and a CodeSystem JSON file become
the tenant's own resources, which the running server's terminology operations use at once."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

from tests.conftest import BASE, make_client
from tests.server import cli

SYSTEM = "urn:example:colours"
CODE_SYSTEM: dict[str, Any] = {
    "resourceType": "CodeSystem",
    "id": "colours",
    "url": SYSTEM,
    "version": "1",
    "status": "active",
    "content": "complete",
    "concept": [{"code": "red", "display": "Red", "concept": [{"code": "crimson", "display": "Crimson"}]}],
}
VALUE_SET: dict[str, Any] = {
    "resourceType": "ValueSet",
    "id": "reds",
    "url": "urn:example:reds",
    "status": "active",
    "compose": {"include": [{"system": SYSTEM, "filter": [{"property": "concept", "op": "is-a", "value": "red"}]}]},
}


def package(path: Path, *resources: dict[str, Any]) -> Path:
    """A FHIR NPM package (packages.html): package/package.json and one JSON file per resource."""
    files = {"package/package.json": {"name": "example.colours", "version": "1.0.0", "fhirVersions": ["4.0.1"]}}
    files |= {f"package/{r['resourceType']}-{r['id']}.json": r for r in resources}
    with tarfile.open(path, "w:gz") as archive:
        for name, content in files.items():
            raw = json.dumps(content).encode()
            member = tarfile.TarInfo(name)
            member.size = len(raw)
            archive.addfile(member, io.BytesIO(raw))
    return path


def load(data: Path, file: Path, ok: bool = True) -> str:
    done = cli("terminology", "load", str(file), "--data-dir", str(data))
    assert (done.returncode == 0) == ok, done.stderr
    return done.stdout if ok else done.stderr


def test_a_package_loads_into_the_tenant_and_the_running_server_uses_it(tmp_path: Path) -> None:
    data = tmp_path / "var"
    with make_client(data) as client:
        out = load(data, package(tmp_path / "colours.tgz", CODE_SYSTEM, VALUE_SET))
        assert out.strip() == "default: loaded 1 CodeSystem, 1 ValueSet from colours.tgz"
        expanded = client.get(f"{BASE}/ValueSet/$expand", params={"url": "urn:example:reds"}).json()
        assert [c["code"] for c in expanded["expansion"]["contains"]] == ["red", "crimson"]
        renamed = {**CODE_SYSTEM, "concept": [{"code": "red", "display": "Rouge"}]}
        (tmp_path / "colours.json").write_text(json.dumps(renamed))
        load(data, tmp_path / "colours.json")  # the same url and version: replaced, not added
        found = client.get(f"{BASE}/CodeSystem", params={"url": SYSTEM}).json()
        assert found["total"] == 1
        lookup = client.get(f"{BASE}/CodeSystem/$lookup", params={"system": SYSTEM, "code": "red"}).json()
        assert [p["valueString"] for p in lookup["parameter"] if p["name"] == "display"] == ["Rouge"]


def test_a_file_that_is_not_terminology_is_refused_with_the_reason(tmp_path: Path) -> None:
    data = tmp_path / "var"
    with make_client(data):
        (tmp_path / "broken.json").write_text("{not json")
        assert "is not JSON" in load(data, tmp_path / "broken.json", ok=False)
        (tmp_path / "broken.tgz").write_bytes(b"not a tar")
        assert "not a gzipped tar package" in load(data, tmp_path / "broken.tgz", ok=False)
        invalid = {**CODE_SYSTEM, "status": "nonsense"}
        (tmp_path / "invalid.json").write_text(json.dumps(invalid))
        assert "1 refused" in cli("terminology", "load", str(tmp_path / "invalid.json"), "--data-dir", str(data)).stdout
