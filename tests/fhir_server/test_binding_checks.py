"""Write-time binding checks over HTTP (terminologies.html#strength): a code outside a required binding of
R4 is refused with 422 and the element's path, on create, update, patch and in a transaction; outside an
extensible or preferred one it is a warning in the response's OperationOutcome (``Prefer:
return=OperationOutcome``, a transaction entry's ``response.outcome``); what the terminology held here cannot
decide (SNOMED CT beyond the shipped fragment) is never refused."""

from __future__ import annotations

from typing import Any

from tests.conftest import BASE, FhirTestClient
from tests.factories import transaction

CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
SNOMED = "http://snomed.info/sct"
OUTCOME = {"Prefer": "return=OperationOutcome"}


def condition(status: str) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "clinicalStatus": {"coding": [{"system": CLINICAL, "code": status}]},
        "code": {"coding": [{"system": SNOMED, "code": "93655004", "display": "Malignant melanoma of skin"}]},
        "subject": {"display": "a patient"},
    }


def observation(interpretation: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "risk"},
        "interpretation": [{"coding": [{"system": INTERPRETATION, "code": interpretation}]}],
    }


def issues(body: dict[str, Any], severity: str) -> list[dict[str, Any]]:
    return [i for i in body["issue"] if i["severity"] == severity]


def test_a_code_outside_a_required_binding_is_refused_with_the_element_path(client: FhirTestClient) -> None:
    refused = client.post(f"{BASE}/Condition", json=condition("cured"))
    assert refused.status_code == 422
    [issue] = refused.json()["issue"]
    assert issue["code"] == "code-invalid"
    assert issue["expression"] == ["Condition.clinicalStatus"]
    assert "condition-clinical" in issue["diagnostics"]
    created = client.post(f"{BASE}/Condition", json=condition("active"))
    assert created.status_code == 201
    id = created.json()["id"]
    refused = client.put(f"{BASE}/Condition/{id}", json={**condition("cured"), "id": id})
    assert refused.status_code == 422
    patch = [{"op": "replace", "path": "/clinicalStatus/coding/0/code", "value": "cured"}]
    refused = client.patch(
        f"{BASE}/Condition/{id}", json=patch, headers={"Content-Type": "application/json-patch+json"}
    )
    assert refused.status_code == 422
    assert refused.json()["issue"][0]["expression"] == ["Condition.clinicalStatus"]
    assert client.get(f"{BASE}/Condition/{id}").json()["meta"]["versionId"] == "1"


def test_a_text_only_concept_under_a_required_binding_is_refused(client: FhirTestClient) -> None:
    body = {**condition("active"), "clinicalStatus": {"text": "better"}}
    refused = client.post(f"{BASE}/Condition", json=body)
    assert refused.status_code == 422
    assert refused.json()["issue"][0]["expression"] == ["Condition.clinicalStatus"]


def test_an_extensible_binding_warns_and_never_refuses(client: FhirTestClient) -> None:
    created = client.post(f"{BASE}/Observation", json=observation("XYZ"), headers=OUTCOME)
    assert created.status_code == 201
    [warning] = issues(created.json(), "warning")
    assert warning["expression"] == ["Observation.interpretation[0]"]
    assert "extensible binding" in warning["diagnostics"]
    clean = client.post(f"{BASE}/Observation", json=observation("H"), headers=OUTCOME)
    assert issues(clean.json(), "warning") == []


def test_a_code_the_server_cannot_decide_is_information_only(client: FhirTestClient) -> None:
    """encounter-reason is SNOMED CT is-a 404684003; the shipped SNOMED CT is a fragment: not decided."""
    encounter = {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "reasonCode": [{"coding": [{"system": SNOMED, "code": "93655004"}]}],
    }
    created = client.post(f"{BASE}/Encounter", json=encounter, headers=OUTCOME)
    assert created.status_code == 201
    assert issues(created.json(), "warning") == []
    assert any(i.get("expression") == ["Encounter.reasonCode[0]"] for i in issues(created.json(), "information"))


def test_a_transaction_refuses_an_invalid_entry_and_reports_warnings_per_entry(client: FhirTestClient) -> None:
    def post(resource: dict[str, Any]) -> dict[str, Any]:
        return {"resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}}

    refused = client.post(BASE, json=transaction([post(observation("H")), post(condition("cured"))]))
    assert refused.status_code == 422
    assert refused.json()["issue"][0]["expression"] == ["Condition.clinicalStatus"]
    assert client.get(f"{BASE}/Observation").json()["total"] == 0
    done = client.post(BASE, json=transaction([post(observation("XYZ")), post(condition("active"))]))
    assert done.status_code == 200
    first, second = done.json()["entry"]
    assert first["response"]["status"].startswith("201")
    assert first["response"]["outcome"]["issue"][0]["expression"] == ["Observation.interpretation[0]"]
    assert "outcome" not in second["response"]
