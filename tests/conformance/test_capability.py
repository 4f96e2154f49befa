"""The CapabilityStatement's operations resolve to their OperationDefinitions, ``searchRevInclude`` is
declared per type, and ``metadata?mode=terminology`` answers a TerminologyCapabilities."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conformance.terminology_capabilities import terminology_capabilities
from fhir_server.api.router import FhirRouter, Operation
from fhir_server.operation_definitions import operation_definition, parameter
from tests.conftest import BASE, FhirTestClient, make_client
from tests.schema import assert_r4


def _declared(statement: dict[str, Any]) -> list[dict[str, str]]:
    rest = statement["rest"][0]
    return rest["operation"] + [op for r in rest["resource"] for op in r.get("operation", [])]


def test_every_declared_operation_resolves_to_its_definition(client: FhirTestClient) -> None:
    statement = client.get(f"{BASE}/metadata").json()
    declared = _declared(statement)
    claim = "https://dermbridge.org/fhir/OperationDefinition/Task-claim"  # the IG's canonical
    assert {"name": "claim", "definition": claim} in declared
    assert {
        "name": "everything",
        "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
    } in declared
    registered = client.app.state.fhir_http.router.operations  # type: ignore[attr-defined]
    assert {op["name"] for op in declared} == set(registered)  # every operation the server has, listed
    for op in declared:
        definition_id = registered[op["name"]].definition["id"]
        answer = client.get(f"{BASE}/OperationDefinition/{definition_id}")
        assert answer.status_code == 200, op
        served = answer.json()
        assert served["resourceType"] == "OperationDefinition" and served["code"] == op["name"]
        assert served["url"] == op["definition"]  # the canonical in the CapabilityStatement is this resource
        assert op["definition"].endswith(f"/OperationDefinition/{definition_id}")  # resolves against the base


def test_an_unknown_operation_definition_is_not_found(client: FhirTestClient) -> None:
    answer = client.get(f"{BASE}/OperationDefinition/no-such-operation")
    assert answer.status_code == 404 and answer.json()["resourceType"] == "OperationOutcome"


def test_rev_includes_are_declared_per_type(client: FhirTestClient) -> None:
    statement = client.get(f"{BASE}/metadata").json()
    assert statement["instantiates"] == ["https://dermbridge.org/fhir/CapabilityStatement/dermbridge-server"]
    assert statement["implementationGuide"] == ["https://dermbridge.org/fhir/ImplementationGuide/dermbridge.fhir"]
    by_type = {r["type"]: r for r in statement["rest"][0]["resource"]}
    patient = by_type["Patient"]["searchRevInclude"]
    assert {"Observation:subject", "DiagnosticReport:subject", "ImagingStudy:patient", "Consent:patient"} <= set(
        patient
    )
    assert "Observation:subject" not in by_type["Organization"]["searchRevInclude"]  # subject: never Organization
    assert "Observation:performer" in by_type["Organization"]["searchRevInclude"]
    assert all(include.split(":")[0] in by_type for include in patient)


def test_terminology_capabilities_at_metadata(client: FhirTestClient) -> None:
    answer = client.get(f"{BASE}/metadata", params={"mode": "terminology"})
    assert answer.status_code == 200
    statement = answer.json()
    assert statement["resourceType"] == "TerminologyCapabilities" and statement["kind"] == "instance"
    registered = client.app.state.fhir_http.router.operations  # type: ignore[attr-defined]
    assert ("expansion" in statement) == ("expand" in registered)
    assert ("translation" in statement) == ("translate" in registered)
    systems = {entry["uri"] for entry in statement.get("codeSystem", [])}
    assert {"http://snomed.info/sct", "http://loinc.org", "http://hl7.org/fhir/sid/icd-10"} <= systems  # shipped
    assert "http://hl7.org/fhir/administrative-gender" in systems  # the R4 code systems the server binds
    assert client.get(f"{BASE}/metadata").json()["resourceType"] == "CapabilityStatement"


def _handler(*_: Any) -> Any:
    raise AssertionError("not invoked")


def test_terminology_capabilities_state_what_is_registered() -> None:
    router = FhirRouter(lambda base, mode: {})
    bare = terminology_capabilities("http://x/fhir/t", router, "1")
    assert "expansion" not in bare and "codeSystem" not in bare and "no terminology operation" in bare["description"]
    expand = operation_definition("expand", level="type", description="ValueSet expansion", resource=("ValueSet",),
                                  parameters=[parameter("url", "in", "uri")], affects_state=False)  # fmt: skip
    router.register(Operation("expand", ("ValueSet",), False, _handler, expand))
    sct = "http://snomed.info/sct"
    listed = terminology_capabilities(
        "http://x/fhir/t", router, "1", lambda: [(sct, None), ("http://loinc.org", "2.77")]
    )
    assert listed["expansion"]["paging"] is True and "validateCode" not in listed
    assert listed["codeSystem"] == [{"uri": "http://loinc.org", "version": [{"code": "2.77"}]}, {"uri": sct}]
    assert_r4(listed)


def test_operation_definitions_are_public_and_other_reads_are_not(tmp_path: Path) -> None:
    """Like ``metadata``, the definitions the CapabilityStatement names are read without a token; a stored
    OperationDefinition, any other read and a write still need one (401)."""
    with make_client(tmp_path / "var", roles=()) as anonymous:
        for op in _declared(anonymous.get(f"{BASE}/metadata").json()):
            definition_id = op["definition"].rsplit("/", 1)[1]  # every canonical resolves against the base
            answer = anonymous.get(f"{BASE}/OperationDefinition/{definition_id}")
            assert answer.status_code == 200 and answer.json()["url"] == op["definition"], op
        assert anonymous.head(f"{BASE}/OperationDefinition/Task-claim").status_code == 200
        for refused in (
            anonymous.get(f"{BASE}/OperationDefinition/no-such-operation"),
            anonymous.get(f"{BASE}/OperationDefinition"),
            anonymous.get(f"{BASE}/OperationDefinition", params={"url": "https://dermbridge.org/fhir"}),
            anonymous.get(f"{BASE}/Patient/Task-claim"),
            anonymous.get(f"{BASE}/ValueSet/skin-lesion-diagnoses"),
            anonymous.put(f"{BASE}/OperationDefinition/Task-claim", json={"resourceType": "OperationDefinition"}),
            anonymous.post(f"{BASE}/OperationDefinition", json={"resourceType": "OperationDefinition"}),
            anonymous.get(f"{BASE}/OperationDefinition/Task-claim/_history"),
        ):
            assert refused.status_code == 401, (refused.request.method, refused.request.url)
        assert anonymous.get("/fhir/no-such-tenant/OperationDefinition/Task-claim").status_code == 404
