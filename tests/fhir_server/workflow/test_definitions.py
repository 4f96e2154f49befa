"""Workflow definitions through the FHIR API (issue 14): PlanDefinitions written as drafts, published by
``$activate`` (one active per product), immutable once published, checked as flows when written."""

from __future__ import annotations

from typing import Any

from fhir_server.workflow.library import shipped
from tests.conftest import BASE, FhirTestClient

PRODUCT_TAG = {"system": "urn:dermbridge:product", "code": "non-cancer"}


def draft(client: FhirTestClient, name: str = "ai-then-signoff", **changes: Any) -> dict[str, Any]:
    body = shipped(name)
    body.pop("id")
    body.update(status="draft", **changes)
    response = client.post(f"{BASE}/PlanDefinition", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def refused(response: Any, status: int, words: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert words in outcome["issue"][0]["diagnostics"]
    return dict(outcome)


def test_published_definitions_are_immutable(client: FhirTestClient) -> None:
    plan = draft(client)
    edited = client.put(f"{BASE}/PlanDefinition/{plan['id']}", json={**plan, "title": "Edited while draft"})
    assert edited.status_code == 200, edited.text  # a draft may change
    active = client.post(f"{BASE}/PlanDefinition/{plan['id']}/$activate").json()
    assert active["status"] == "active" and active["title"] == "Edited while draft"
    refused(client.put(f"{BASE}/PlanDefinition/{plan['id']}", json={**active, "title": "x"}), 409, "immutable")
    patch = [{"op": "replace", "path": "/title", "value": "x"}]
    response = client.patch(f"{BASE}/PlanDefinition/{plan['id']}", json=patch,
                            headers={"Content-Type": "application/json-patch+json"})  # fmt: skip
    refused(response, 409, "immutable")
    retired = client.post(f"{BASE}/PlanDefinition/{plan['id']}/$retire").json()
    assert retired["status"] == "retired"
    refused(client.put(f"{BASE}/PlanDefinition/{plan['id']}", json={**retired, "status": "draft"}), 409, "immutable")
    refused(client.post(f"{BASE}/PlanDefinition/{plan['id']}/$activate"), 409, "retired")


def test_activating_a_version_retires_the_previous_one_of_the_product(client: FhirTestClient) -> None:
    first, second = draft(client), draft(client, version="2")
    client.post(f"{BASE}/PlanDefinition/{first['id']}/$activate")
    client.post(f"{BASE}/PlanDefinition/{second['id']}/$activate")
    assert client.get(f"{BASE}/PlanDefinition/{first['id']}").json()["status"] == "retired"
    active = client.get(f"{BASE}/PlanDefinition", params={"status": "active"}).json()
    assert [e["resource"]["id"] for e in active["entry"]] == [second["id"]]


def test_status_changes_go_through_the_operations(client: FhirTestClient) -> None:
    body = {**shipped("human-only"), "status": "active"}
    body.pop("id")
    refused(client.post(f"{BASE}/PlanDefinition", json=body), 422, "$activate")
    plan = draft(client, "human-only")
    refused(client.put(f"{BASE}/PlanDefinition/{plan['id']}", json={**plan, "status": "active"}), 422, "$activate")


def test_a_definition_that_is_not_a_flow_is_refused_naming_the_element(client: FhirTestClient) -> None:
    body = shipped("ai-only")
    body.pop("id")
    body["status"] = "draft"
    body["action"][0]["code"][0]["coding"][0]["code"] = "teleport"
    outcome = refused(client.post(f"{BASE}/PlanDefinition", json=body), 422, "one code of urn:dermbridge:workflow-step")
    assert outcome["issue"][0]["expression"] == ["PlanDefinition.action[0].code"]
    body = shipped("ai-only") | {"status": "draft"}
    body.pop("id")
    body["action"][2]["dynamicValue"][0]["expression"]["expression"] = "1.5"  # malignantAbove out of [0, 1]
    refused(client.post(f"{BASE}/PlanDefinition", json=body), 422, "malignantAbove is a number in [0.0, 1.0]")
    body = shipped("ai-only") | {"status": "draft"}
    body.pop("id")
    body["action"] = [a for a in body["action"] if a["id"] != "human-review"]  # escalations would go nowhere
    refused(client.post(f"{BASE}/PlanDefinition", json=body), 422, "human-review")


def test_other_plan_definitions_are_left_alone(client: FhirTestClient) -> None:
    order_set = {"resourceType": "PlanDefinition", "status": "active", "title": "Excision order set",
                 "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/plan-definition-type",
                                      "code": "order-set"}]}}  # fmt: skip
    created = client.post(f"{BASE}/PlanDefinition", json=order_set)
    assert created.status_code == 201, created.text
    assert client.put(f"{BASE}/PlanDefinition/{created.json()['id']}", json=created.json()).status_code == 200


def test_a_case_for_a_product_without_a_workflow_is_refused(client: FhirTestClient) -> None:
    patient = client.post(f"{BASE}/Patient", json={"resourceType": "Patient"}).json()["id"]
    case = {"resourceType": "DiagnosticReport", "status": "registered", "meta": {"tag": [PRODUCT_TAG]},
            "code": {"coding": [{"system": "http://loinc.org", "code": "72170-4"}]},
            "subject": {"reference": f"Patient/{patient}"}}  # fmt: skip
    outcome = refused(client.post(f"{BASE}/DiagnosticReport", json=case), 422, "product 'non-cancer'")
    assert outcome["issue"][0]["expression"] == ["DiagnosticReport.meta.tag"]
    plan = draft(client, "human-only", useContext=[{
        "code": {"system": "http://terminology.hl7.org/CodeSystem/usage-context-type", "code": "program"},
        "valueCodeableConcept": {"coding": [PRODUCT_TAG]}}])  # fmt: skip
    client.post(f"{BASE}/PlanDefinition/{plan['id']}/$activate")
    assert client.post(f"{BASE}/DiagnosticReport", json=case).status_code == 201  # no restart needed
