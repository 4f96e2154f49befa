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
from tests.terminology.test_rf2 import skin_release

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


def test_an_rf2_release_loads_into_a_store_that_the_running_server_uses(tmp_path: Path) -> None:
    """The release becomes a ``not-present`` CodeSystem naming its store; $expand is-a, $subsumes, $lookup
    and :below answer from it, and the write-time binding checks can now decide SNOMED CT bindings."""
    data = tmp_path / "var"
    snomed = "http://snomed.info/sct"
    with make_client(data) as client:
        out = load(data, skin_release().write(tmp_path / "release.zip"))
        assert "CodeSystem (9 concepts, http://snomed.info/sct/900000000000207008/version/20250101)" in out
        [stored] = [e["resource"] for e in client.get(f"{BASE}/CodeSystem", params={"url": snomed}).json()["entry"]]
        assert (stored["content"], stored["count"]) == ("not-present", 9)
        nevi = {**VALUE_SET, "id": "nevi", "url": "urn:example:nevi"}
        nevi["compose"] = {
            "include": [{"system": snomed, "filter": [{"property": "concept", "op": "is-a", "value": "400010006"}]}]
        }
        assert client.put(f"{BASE}/ValueSet/nevi", json=nevi).status_code == 201
        expanded = client.get(f"{BASE}/ValueSet/$expand", params={"url": "urn:example:nevi"}).json()
        assert [c["code"] for c in expanded["expansion"]["contains"]] == ["400010006", "254818000", "1197294001"]
        subsumes = {"system": snomed, "codeA": "404684003", "codeB": "1197294001"}
        outcome = client.get(f"{BASE}/CodeSystem/$subsumes", params=subsumes).json()
        assert outcome["parameter"] == [{"name": "outcome", "valueCode": "subsumes"}]
        lookup = client.get(f"{BASE}/CodeSystem/$lookup", params={"system": snomed, "code": "400010006"}).json()
        assert [p["valueString"] for p in lookup["parameter"] if p["name"] == "display"] == [
            "Melanocytic nevus of skin"
        ]
        on_instance = client.get(f"{BASE}/CodeSystem/{stored['id']}/$lookup", params={"code": "400010006"}).json()
        assert on_instance == lookup
        condition = {"resourceType": "Condition", "subject": {"display": "a patient"}}
        for code in ("254818000", "93655004"):
            body = {**condition, "code": {"coding": [{"system": snomed, "code": code}]}}
            assert client.post(f"{BASE}/Condition", json=body).status_code == 201
        below = client.get(f"{BASE}/Condition", params={"code:below": f"{snomed}|400010006"}).json()
        assert [e["resource"]["code"]["coding"][0]["code"] for e in below["entry"]] == ["254818000"]
        encounter = {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "reasonCode": [{"coding": [{"system": snomed, "code": "39937001"}]}],  # a body structure, no finding
        }
        warned = client.post(f"{BASE}/Encounter", json=encounter, headers={"Prefer": "return=OperationOutcome"})
        assert [i["expression"] for i in warned.json()["issue"] if i["severity"] == "warning"] == [
            ["Encounter.reasonCode[0]"]
        ]
        load(data, tmp_path / "release.zip")  # again: a new store replaces the old one, in use or not
        assert len(list((data / "terminology" / "default").glob("*.sqlite"))) == 1
        again = client.get(f"{BASE}/CodeSystem/$subsumes", params=subsumes).json()
        assert again["parameter"] == [{"name": "outcome", "valueCode": "subsumes"}]


def test_a_release_without_its_snapshot_files_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "var"
    with make_client(data):
        (tmp_path / "empty").mkdir()
        assert "not an RF2 release" in load(data, tmp_path / "empty", ok=False)


def test_a_package_code_system_too_large_for_a_resource_goes_to_a_store(tmp_path: Path) -> None:
    """More than 20,000 concepts: held in a store like an RF2 release, the hierarchy (nesting and ``parent``
    properties) kept."""
    data = tmp_path / "var"
    concepts: list[dict[str, Any]] = [{"code": "root", "display": "Root", "concept": [{"code": "c0", "display": "C0"}]}]
    concepts += [
        {"code": f"c{i}", "display": f"C{i}", "property": [{"code": "parent", "valueCode": f"c{(i - 1) // 10}"}]}
        for i in range(1, 20_001)
    ]
    big = {**CODE_SYSTEM, "id": "big", "url": "urn:example:big", "concept": concepts}
    with make_client(data) as client:
        out = load(data, package(tmp_path / "big.tgz", big, VALUE_SET))
        assert "1 CodeSystem (20002 concepts)" in out and "1 ValueSet" in out
        [stored] = [
            e["resource"] for e in client.get(f"{BASE}/CodeSystem", params={"url": "urn:example:big"}).json()["entry"]
        ]
        assert (stored["content"], stored["count"], "concept" in stored) == ("not-present", 20_002, False)
        subsumes = {"system": "urn:example:big", "codeA": "root", "codeB": "c12345"}
        outcome = client.get(f"{BASE}/CodeSystem/$subsumes", params=subsumes).json()
        assert outcome["parameter"] == [{"name": "outcome", "valueCode": "subsumes"}]
