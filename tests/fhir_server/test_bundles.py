"""Batch and transaction Bundles (http.html#transaction)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import BASE, ENGINES, FhirTestClient, engine_settings
from tests.factories import diagnostic_report, observation, patient, transaction

ROBOT = {"resourceType": "Patient", "gender": "robot"}


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Bundles run on every engine."""
    return engine_settings(request)


def _post(client: FhirTestClient, bundle: dict[str, Any]) -> Any:
    return client.post(BASE, json=bundle)


def test_transaction_resolves_urn_uuid_references(client: FhirTestClient) -> None:
    bundle = transaction(
        [
            {"fullUrl": "urn:uuid:11111111-1111-1111-1111-111111111111",
             "resource": patient(), "request": {"method": "POST", "url": "Patient"}},
            {"fullUrl": "urn:uuid:22222222-2222-2222-2222-222222222222",
             "resource": observation("urn:uuid:11111111-1111-1111-1111-111111111111"),
             "request": {"method": "POST", "url": "Observation"}},
            {"resource": diagnostic_report("urn:uuid:11111111-1111-1111-1111-111111111111",
                                           result=[{"reference": "urn:uuid:22222222-2222-2222-2222-222222222222"}]),
             "request": {"method": "POST", "url": "DiagnosticReport"}},
        ]
    )  # fmt: skip
    response = _post(client, bundle)
    assert response.status_code == 200
    result = response.json()
    assert result["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in result["entry"]]
    assert statuses == ["201 Created"] * 3
    patient_id = result["entry"][0]["resource"]["id"]
    obs = result["entry"][1]["resource"]
    report = result["entry"][2]["resource"]
    assert obs["subject"]["reference"] == f"Patient/{patient_id}"
    assert report["result"][0]["reference"] == f"Observation/{obs['id']}"
    assert result["entry"][0]["response"]["location"].endswith(f"Patient/{patient_id}/_history/1")
    found = client.get(f"{BASE}/DiagnosticReport", params={"subject": patient_id}).json()
    assert found["total"] == 1


def test_transaction_is_atomic(client: FhirTestClient) -> None:
    bundle = transaction(
        [
            {"resource": patient(family="Atomic"), "request": {"method": "POST", "url": "Patient"}},
            {"resource": ROBOT, "request": {"method": "POST", "url": "Patient"}},
        ]
    )  # fmt: skip
    response = _post(client, bundle)
    assert response.status_code == 422
    assert response.json()["resourceType"] == "OperationOutcome"
    assert client.get(f"{BASE}/Patient", params={"name": "Atomic"}).json()["total"] == 0


def test_transaction_processing_order_and_conditional_entries(client: FhirTestClient) -> None:
    old = client.post(f"{BASE}/Patient", json=patient(family="Old")).json()
    client.post(f"{BASE}/Patient", json=patient(identifier=[{"system": "urn:mrn", "value": "9"}]))
    bundle = transaction(
        [
            {"request": {"method": "GET", "url": "Patient?name=Old"}},
            {"resource": patient(identifier=[{"system": "urn:mrn", "value": "9"}]),
             "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:mrn|9"}},
            {"request": {"method": "DELETE", "url": f"Patient/{old['id']}"}},
            {"resource": patient(family="Conditional", identifier=[{"system": "urn:mrn", "value": "10"}]),
             "request": {"method": "PUT", "url": "Patient?identifier=urn:mrn|10"}},
        ]
    )  # fmt: skip
    result = _post(client, bundle).json()
    search_result, conditional_create, deleted, conditional_update = result["entry"]
    assert search_result["resource"]["total"] == 0  # the DELETE ran first
    assert conditional_create["response"]["status"] == "200 OK"
    assert deleted["response"]["status"] == "200 OK"
    assert conditional_update["response"]["status"] == "201 Created"
    assert client.get(f"{BASE}/Patient", params={"identifier": "urn:mrn|9"}).json()["total"] == 1


def test_transaction_conditional_reference(client: FhirTestClient) -> None:
    gp = client.post(
        f"{BASE}/Practitioner",
        json={"resourceType": "Practitioner", "identifier": [{"system": "urn:npi", "value": "55"}]},
    ).json()
    bundle = transaction(
        [{"resource": patient(generalPractitioner=[{"reference": "Practitioner?identifier=urn:npi|55"}]),
          "request": {"method": "POST", "url": "Patient"}}]
    )  # fmt: skip
    created = _post(client, bundle).json()["entry"][0]["resource"]
    assert created["generalPractitioner"][0]["reference"] == f"Practitioner/{gp['id']}"
    missing = transaction(
        [{"resource": patient(generalPractitioner=[{"reference": "Practitioner?identifier=urn:npi|none"}]),
          "request": {"method": "POST", "url": "Patient"}}]
    )  # fmt: skip
    assert _post(client, missing).status_code == 404


def test_a_conditional_reference_is_resolved_again_after_an_entry_writes_its_type(client: FhirTestClient) -> None:
    """A transaction resolves a conditional reference once (profiled: most of a Synthea entry's statements),
    but an entry writing the type in between may change what it finds: here a second match (412)."""
    npi = [{"system": "urn:npi", "value": "77"}]
    client.post(f"{BASE}/Practitioner", json={"resourceType": "Practitioner", "identifier": npi})

    def put(resource: dict[str, Any]) -> dict[str, Any]:
        return {
            "resource": resource,
            "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"},
        }

    def with_gp(id: str) -> dict[str, Any]:
        return put({**patient(generalPractitioner=[{"reference": "Practitioner?identifier=urn:npi|77"}]), "id": id})

    second_gp = put({"resourceType": "Practitioner", "id": "cr-gp", "identifier": npi})
    refused = _post(client, transaction([with_gp("cr-1"), second_gp, with_gp("cr-2")]))
    assert refused.status_code == 412
    assert "more than one" in refused.json()["issue"][0]["diagnostics"]
    first, second = (
        e["resource"] for e in _post(client, transaction([with_gp("cr-3"), with_gp("cr-4")])).json()["entry"]
    )
    assert first["generalPractitioner"] == second["generalPractitioner"]
    assert first["generalPractitioner"][0]["reference"].startswith("Practitioner/")


def test_batch_entries_are_independent(client: FhirTestClient) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": patient(family="Good"), "request": {"method": "POST", "url": "Patient"}},
            {"resource": ROBOT, "request": {"method": "POST", "url": "Patient"}},
            {"request": {"method": "GET", "url": "Patient/does-not-exist"}},
            {"request": {"method": "GET", "url": "Patient?name=Good"}},
            {"request": {"method": "BREW", "url": "Patient"}},
        ],
    }
    response = _post(client, bundle)
    assert response.status_code == 200
    statuses = [e["response"]["status"] for e in response.json()["entry"]]
    assert statuses[0] == "201 Created"
    assert statuses[1] == "422"
    assert statuses[2] == "404"
    assert statuses[3] == "200 OK"
    assert statuses[4] == "400"
    assert response.json()["entry"][3]["resource"]["total"] == 1


def test_batch_patch_with_binary(client: FhirTestClient) -> None:
    import base64
    import json

    created = client.post(f"{BASE}/Patient", json=patient()).json()
    data = base64.b64encode(json.dumps([{"op": "replace", "path": "/gender", "value": "male"}]).encode()).decode()
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": data},
             "request": {"method": "PATCH", "url": f"Patient/{created['id']}"}}
        ],
    }  # fmt: skip
    result = _post(client, bundle).json()
    assert result["entry"][0]["response"]["status"] == "200 OK"
    assert client.get(f"{BASE}/Patient/{created['id']}").json()["gender"] == "male"


def test_bundle_type_and_shape_errors(client: FhirTestClient) -> None:
    assert _post(client, {"resourceType": "Bundle", "type": "collection"}).status_code == 400
    assert _post(client, patient()).status_code == 400
    assert _post(client, {"resourceType": "Bundle", "type": "transaction", "entry": "x"}).status_code == 400
    nested = transaction([{"resource": transaction([]), "request": {"method": "POST", "url": "/"}}])
    assert _post(client, nested).status_code == 400
