"""The operations ``dermbridge.identity`` registers declare valid R4 OperationDefinitions and appear in
the CapabilityStatement where a client looks for them."""

from __future__ import annotations

from fhir_server.operation_definitions import canonical
from fhir_server.validation import validate
from tests.conftest import BASE, FhirTestClient
from tests.schema import assert_r4

REGISTERED = {"merge": "Patient", "ai-purposes": "Consent", "analyze": "DiagnosticReport", "issuer-systems": None}


def test_identity_operations_are_declared(client: FhirTestClient) -> None:
    operations = client.app.state.fhir_http.router.operations  # type: ignore[attr-defined]
    statement = client.get(f"{BASE}/metadata").json()["rest"][0]
    for name, resource_type in REGISTERED.items():
        definition = operations[name].definition
        validate(definition, "OperationDefinition")
        assert_r4(definition)
        declared = (
            statement["operation"]
            if resource_type is None
            else next(r for r in statement["resource"] if r["type"] == resource_type)["operation"]
        )
        assert {"name": name, "definition": canonical(definition)} in declared
