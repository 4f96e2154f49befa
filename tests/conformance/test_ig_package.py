"""The IG package's content (conformance.ig) as the code registers it: every resource valid R4, listed by the
ImplementationGuide, the manifest per the NPM Package Specification, the same bytes from the same registries;
the CapabilityStatement names the profiles per type."""

from __future__ import annotations

import json
from typing import Any

from conformance.ig.build import package_contents
from conformance.ig.guide import IG_URL, PACKAGE_ID
from conformance.ig.profiles import supported_profiles
from dermbridge import __version__
from dermbridge.cli_conformance import package_router
from fhir_server.declared_profiles import CASE_REPORT, LESION, REVIEW_TASK
from tests.conftest import BASE, FhirTestClient
from tests.schema import assert_r4


def _documents() -> dict[str, Any]:
    return {name: json.loads(raw) for name, raw in package_contents(package_router(), __version__, []).items()}


def test_every_resource_is_r4_and_listed_by_the_guide() -> None:
    documents = _documents()
    manifest = documents.pop("package/package.json")
    assert manifest["name"] == PACKAGE_ID and manifest["canonical"] == "https://dermbridge.org/fhir"
    assert manifest["fhirVersions"] == ["4.0.1"] and manifest["dependencies"] == {"hl7.fhir.r4.core": "4.0.1"}
    index = documents.pop("package/.index.json")
    resources = list(documents.values())
    for resource in resources:
        assert_r4(resource)
    guide = documents[f"package/ImplementationGuide-{PACKAGE_ID}.json"]
    assert guide["url"] == IG_URL and guide["packageId"] == PACKAGE_ID and guide["version"] == __version__
    listed = {e["reference"]["reference"] for e in guide["definition"]["resource"]}
    assert listed == {f"{r['resourceType']}/{r['id']}" for r in resources if r is not guide}
    assert {f["filename"] for f in index["files"]} == {n.removeprefix("package/") for n in documents}
    statement = documents["package/CapabilityStatement-dermbridge-server.json"]
    assert statement["kind"] == "requirements" and "implementation" not in statement and "software" not in statement


def test_the_same_registries_give_the_same_bytes() -> None:
    router = package_router()
    assert package_contents(router, __version__, []) == package_contents(package_router(), __version__, [])


def test_the_capability_statement_names_the_profiles(client: FhirTestClient) -> None:
    by_type = {r["type"]: r for r in client.get(f"{BASE}/metadata").json()["rest"][0]["resource"]}
    assert by_type["DiagnosticReport"]["supportedProfile"] == [CASE_REPORT]
    assert by_type["BodyStructure"]["supportedProfile"] == [LESION]
    assert REVIEW_TASK in by_type["Task"]["supportedProfile"]
    assert len(by_type["Observation"]["supportedProfile"]) == 3  # AI risk result, AI diagnosis, clinician finding
    assert "supportedProfile" not in by_type["Patient"]
    assert {url for urls in supported_profiles().values() for url in urls} == {
        url for r in by_type.values() for url in r.get("supportedProfile", []) if url.startswith("https://")
    }
