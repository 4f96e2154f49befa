"""The IG package (``dermbridge conformance package``) loads in a third-party tool: fhir-package-loader,
the FSH team's FHIR package loader (what SUSHI loads dependencies with), installed by ``make install`` under
the venv. Offline: its own cache extracts the tarball, then it loads and lists the profiles and value sets
the code registers. The package's examples validate (R4 schema, the server's ``$validate``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from conformance.ig.content import operation_definitions, terminology
from conformance.ig.guide import PACKAGE_ID
from conformance.ig.profiles import profiles
from dermbridge import __version__
from dermbridge.cli_conformance import package_router
from tests.conftest import BASE, make_client
from tests.schema import assert_r4

pytestmark = pytest.mark.interop
LOADER = Path(sys.prefix, "node", "node_modules", "fhir-package-loader")
SCRIPT = Path(__file__).with_name("fhir_package_loader.js")


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ig")
    operator = out / "operator-var"  # an operator's settings never reach the example server
    env = os.environ | {"DERMBRIDGE_BLOB_DIR": str(operator), "DERMBRIDGE_AUTH_ENABLED": "false"}
    done = subprocess.run(
        [sys.executable, "-m", "dermbridge", "conformance", "package", "--out", str(out)],
        capture_output=True, text=True, timeout=600, check=False, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"wrote {PACKAGE_ID}#{__version__}" in done.stdout and "no example of" not in done.stderr
    assert not operator.exists()
    raw = (out / "package.tgz").read_bytes()
    with tarfile.open(out / "package.tgz", "r:gz") as archive:
        text = b"".join(archive.extractfile(m).read() for m in archive.getmembers() if m.isfile())  # type: ignore[union-attr]
    assert b"127.0.0.1" not in text and raw
    return out / "package.tgz"


def _load(package: Path, cache: Path) -> dict[str, Any]:
    assert LOADER.is_dir(), f"{LOADER} is missing: run `make install` (it installs fhir-package-loader)"
    done = subprocess.run(
        ["node", str(SCRIPT), str(LOADER), str(cache), str(package), PACKAGE_ID, __version__],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    loaded: dict[str, Any] = json.loads(done.stdout)
    return loaded


def test_fhir_package_loader_lists_the_profiles_and_value_sets(package: Path, tmp_path: Path) -> None:
    loaded = _load(package, tmp_path / "cache")
    assert loaded["status"] == "LOADED", loaded["logs"]
    manifest = loaded["packageJSON"]
    assert manifest["name"] == PACKAGE_ID and manifest["version"] == __version__
    assert manifest["fhirVersions"] == ["4.0.1"] and manifest["dependencies"] == {"hl7.fhir.r4.core": "4.0.1"}
    assert sorted(loaded["profiles"]) == sorted(
        p["url"] for p in profiles() if p["kind"] == "resource" and p["derivation"] == "constraint"
    )
    own_value_sets = {r["url"] for r in terminology() if r["resourceType"] == "ValueSet"}
    assert "https://dermbridge.org/fhir/ValueSet/skin-lesion-diagnoses" in own_value_sets
    assert set(loaded["valueSets"]) == own_value_sets
    found = {(r["resourceType"], r["url"]) for r in loaded["resources"]}
    assert ("ImplementationGuide", f"https://dermbridge.org/fhir/ImplementationGuide/{PACKAGE_ID}") in found
    assert ("CapabilityStatement", "https://dermbridge.org/fhir/CapabilityStatement/dermbridge-server") in found
    assert ("ConceptMap", "https://dermbridge.org/fhir/ConceptMap/snomed-to-icd10-dermatology") in found
    claim = "https://dermbridge.org/fhir/OperationDefinition/Task-claim"
    assert ("OperationDefinition", claim) in found
    assert {(r["resourceType"], r["url"]) for r in operation_definitions(package_router())} <= found
    if loaded["profiles"]:
        assert loaded["firstProfileHasSnapshot"] is True
    assert not [entry for entry in loaded["logs"] if entry["level"] == "error"]


def test_the_archive_follows_the_package_layout(package: Path) -> None:
    with tarfile.open(package, "r:gz") as archive:
        names = archive.getnames()
        index = json.load(archive.extractfile("package/.index.json"))  # type: ignore[arg-type]
    assert all(name.startswith("package/") for name in names)
    assert {"package/package.json", "package/.index.json"} <= set(names)
    listed = {f"package/{entry['filename']}" for entry in index["files"]}
    assert listed == {n for n in names if n.count("/") == 1 and n.endswith(".json")} - {
        "package/package.json",
        "package/.index.json",
    }
    assert index["index-version"] == 2


def test_one_example_per_profile_and_each_validates(package: Path, tmp_path: Path) -> None:
    """Each example is listed in the ImplementationGuide with the profile it shows, passes the R4 schema and
    passes ``$validate`` against that profile on another server."""
    with tarfile.open(package, "r:gz") as archive:
        files = {m.name: archive.extractfile(m) for m in archive.getmembers() if m.name.endswith(".json")}
        documents = {name: json.load(handle) for name, handle in files.items() if handle is not None}
    examples = [doc for name, doc in documents.items() if name.startswith("package/example/") and "resourceType" in doc]
    by_profile = {example["meta"]["profile"][0]: example for example in examples}
    resource_profiles = {p["url"]: p for p in profiles() if p["kind"] == "resource" and p["derivation"] == "constraint"}
    assert len(examples) == len(by_profile) and set(by_profile) == set(resource_profiles)
    guide = documents[f"package/ImplementationGuide-{PACKAGE_ID}.json"]
    shown = {e["reference"]["reference"]: e.get("exampleCanonical") for e in guide["definition"]["resource"]}
    with make_client(tmp_path / "var") as client:
        for url, example in by_profile.items():
            assert shown[f"{example['resourceType']}/{example['id']}"] == url
            assert_r4(example)
            assert example["resourceType"] == resource_profiles[url]["type"]
            answer = client.post(f"{BASE}/{example['resourceType']}/$validate", params={"profile": url}, json=example)
            assert answer.status_code == 200, answer.text
            errors = [i for i in answer.json()["issue"] if i["severity"] in ("error", "fatal")]
            assert not errors, (url, errors)
            claimed = client.post(f"{BASE}/{example['resourceType']}/$validate", json=example)  # by meta.profile
            assert not [i for i in claimed.json()["issue"] if i["severity"] in ("error", "fatal")], url
