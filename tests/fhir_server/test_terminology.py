"""The terminology operations over HTTP (terminology-service.html) on the shipped content and on a
tenant's own CodeSystem/ValueSet/ConceptMap, and the token search modifiers that use them
(search.html#modifiers: ``:in``, ``:not-in``, ``:above``, ``:below``). Expected outputs worked out by hand."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import BASE, FhirTestClient
from tests.factories import patient

SNOMED = "http://snomed.info/sct"
DIAGNOSES = "https://dermbridge.org/fhir/ValueSet/skin-lesion-diagnoses"
SHAPES = "urn:example:shapes"
CODE_SYSTEM: dict[str, Any] = {
    "resourceType": "CodeSystem",
    "url": SHAPES,
    "version": "1",
    "status": "active",
    "content": "complete",
    "concept": [
        {
            "code": "polygon",
            "display": "Polygon",
            "concept": [{"code": "triangle", "display": "Triangle"}, {"code": "square", "display": "Square"}],
        },
        {"code": "circle", "display": "Circle"},
    ],
}
VALUE_SET: dict[str, Any] = {
    "resourceType": "ValueSet",
    "url": "urn:example:polygons",
    "status": "active",
    "compose": {"include": [{"system": SHAPES, "filter": [{"property": "concept", "op": "is-a", "value": "polygon"}]}]},
}


def get(client: FhirTestClient, path: str, status: int = 200, **params: Any) -> dict[str, Any]:
    response = client.get(f"{BASE}/{path}", params=params)
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


def value(parameters: dict[str, Any], name: str) -> Any:
    found = [p for p in parameters["parameter"] if p["name"] == name]
    assert len(found) == 1, parameters
    return next(v for k, v in found[0].items() if k.startswith("value"))


def codes(expanded: dict[str, Any]) -> list[str]:
    return [c["code"] for c in expanded["expansion"].get("contains", [])]


def issue(outcome: dict[str, Any]) -> tuple[str, list[str]]:
    first = outcome["issue"][0]
    return first["code"], first.get("expression", [])


def create(client: FhirTestClient, resource: dict[str, Any]) -> str:
    response = client.post(f"{BASE}/{resource['resourceType']}", json=resource)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def test_lookup_of_a_shipped_snomed_code_get_and_post(client: FhirTestClient) -> None:
    found = get(client, "CodeSystem/$lookup", system=SNOMED, code="254818000")
    assert value(found, "display") == "Dysplastic nevus of skin"
    parents = [p["part"][1]["valueCode"] for p in found["parameter"] if p["name"] == "property"]
    assert parents == ["400010006"]
    body = {
        "resourceType": "Parameters",
        "parameter": [{"name": "coding", "valueCoding": {"system": SNOMED, "code": "400096001"}}],
    }
    response = client.post(f"{BASE}/CodeSystem/$lookup", json=body)
    assert response.status_code == 200
    assert value(response.json(), "display") == "Melanocytic nevus"


def test_lookup_errors_name_what_is_unknown(client: FhirTestClient) -> None:
    assert issue(get(client, "CodeSystem/$lookup", 404, system="urn:example:nope", code="x")) == (
        "not-found",
        ["system"],
    )
    assert issue(get(client, "CodeSystem/$lookup", 404, system=SNOMED, code="123456")) == ("not-found", ["code"])
    assert issue(get(client, "CodeSystem/$lookup", 400, system=SNOMED))[0] == "invalid"
    unknown_version = get(client, "CodeSystem/$lookup", 404, system=SNOMED, code="9014002", version="1999")
    assert "version 1999" in unknown_version["issue"][0]["diagnostics"]


def test_expand_shipped_value_set_by_url_and_by_id_with_filter_and_paging(client: FhirTestClient) -> None:
    by_url = get(client, "ValueSet/$expand", url=DIAGNOSES, filter="nevus")
    # the nevi under is-a 400096001, and the melanoma that arises in one
    assert codes(by_url) == ["1197294001", "400096001", "400010006", "254818000"]
    british = get(client, "ValueSet/$expand", url=DIAGNOSES, filter="NAEVUS")  # designations count too
    assert codes(british) == ["1197294001", "400096001", "400010006", "254818000"]
    page = get(client, "ValueSet/skin-lesion-diagnoses/$expand", offset=1, count=2)
    assert page["expansion"]["total"] == 10
    assert codes(page) == ["1197294001", "109266006"]
    assert issue(get(client, "ValueSet/$expand", 400, url=DIAGNOSES, count=100000)) == ("too-costly", ["count"])
    assert issue(get(client, "ValueSet/$expand", 404, url="urn:example:nope")) == ("not-found", ["url"])
    assert get(client, "ValueSet/no-such-id/$expand", 404)["issue"][0]["code"] == "not-found"


def test_shipped_content_is_read_by_id_unless_the_tenant_has_its_own(client: FhirTestClient) -> None:
    shipped = get(client, "ValueSet/skin-lesion-diagnoses")
    assert shipped["url"] == DIAGNOSES
    assert get(client, "CodeSystem/snomed-ct-dermatology")["content"] == "fragment"
    assert get(client, "ConceptMap/no-such-map", 404)["issue"][0]["code"] == "not-found"
    own = {**VALUE_SET, "id": "skin-lesion-diagnoses"}
    assert client.put(f"{BASE}/ValueSet/skin-lesion-diagnoses", json=own).status_code == 201
    assert get(client, "ValueSet/skin-lesion-diagnoses")["url"] == "urn:example:polygons"
    patient_reader = {"Authorization": f"Bearer {client.token(scope='system/Patient.rs')}"}
    assert client.get(f"{BASE}/CodeSystem/snomed-ct-dermatology", headers=patient_reader).status_code == 403


def test_tenant_code_system_and_value_set_take_part_and_updates_are_seen(client: FhirTestClient) -> None:
    system_id = create(client, CODE_SYSTEM)
    vs_id = create(client, VALUE_SET)
    assert codes(get(client, f"ValueSet/{vs_id}/$expand")) == ["polygon", "triangle", "square"]
    outcome = get(client, "CodeSystem/$subsumes", system=SHAPES, codeA="polygon", codeB="square")
    assert value(outcome, "outcome") == "subsumes"
    assert value(get(client, f"CodeSystem/{system_id}/$subsumes", codeA="circle", codeB="square"), "outcome") == (
        "not-subsumed"
    )
    moved = {**CODE_SYSTEM, "id": system_id, "version": "2"}
    moved["concept"] = [
        *CODE_SYSTEM["concept"][:1],
        {"code": "circle", "display": "Circle", "property": [{"code": "parent", "valueCode": "polygon"}]},
    ]
    assert client.put(f"{BASE}/CodeSystem/{system_id}", json=moved).status_code == 200
    assert codes(get(client, "ValueSet/$expand", url="urn:example:polygons")) == [
        "polygon",
        "triangle",
        "square",
        "circle",
    ]


def test_a_canonical_url_with_search_syntax_in_it_is_found(client: FhirTestClient) -> None:
    odd = {**CODE_SYSTEM, "url": "urn:example:a,b|c$d"}
    create(client, odd)
    assert value(get(client, "CodeSystem/$lookup", system=odd["url"], code="circle"), "display") == "Circle"


def test_validate_code_in_a_value_set_and_in_a_code_system(client: FhirTestClient) -> None:
    valid = get(client, "ValueSet/$validate-code", url=DIAGNOSES, system=SNOMED, code="254651007")
    assert value(valid, "result") is True
    assert value(valid, "display") == "Squamous cell carcinoma of skin"
    invalid = get(client, "ValueSet/$validate-code", url=DIAGNOSES, system=SNOMED, code="9014002")
    assert value(invalid, "result") is False
    assert "9014002" in value(invalid, "message")
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "url", "valueUri": "http://hl7.org/fhir/ValueSet/observation-status"},
            {
                "name": "codeableConcept",
                "valueCodeableConcept": {
                    "coding": [
                        {"system": "http://hl7.org/fhir/observation-status", "code": "nope"},
                        {"system": "http://hl7.org/fhir/observation-status", "code": "amended"},
                    ]
                },
            },
        ],
    }
    response = client.post(f"{BASE}/ValueSet/$validate-code", json=body)
    assert value(response.json(), "result") is True
    wrong_display = get(client, "CodeSystem/$validate-code", url=SNOMED, code="9014002", display="Eczema")
    assert value(wrong_display, "result") is False
    assert get(client, "CodeSystem/$validate-code", 404, url="urn:example:nope", code="x")["issue"][0]["code"] == (
        "not-found"
    )


def test_translate_snomed_to_icd10_and_its_errors(client: FhirTestClient) -> None:
    answer = get(client, "ConceptMap/$translate", system=SNOMED, code="93655004")
    assert value(answer, "result") is True
    (match,) = [p["part"] for p in answer["parameter"] if p["name"] == "match"]
    assert match[0]["valueCode"] == "equivalent"
    assert match[1]["valueCoding"] == {
        "system": "http://hl7.org/fhir/sid/icd-10",
        "code": "C43.9",
        "display": "Malignant melanoma of skin, unspecified",
    }
    by_id = get(client, "ConceptMap/snomed-to-icd10-dermatology/$translate", system=SNOMED, code="201101007")
    assert value(by_id, "result") is True
    assert issue(get(client, "ConceptMap/$translate", 400, system=SNOMED, code="9014002", reverse="true")) == (
        "not-supported",
        ["reverse"],
    )
    assert issue(get(client, "ConceptMap/$translate", 404, url="urn:example:nope", system=SNOMED, code="1"))[0] == (
        "not-found"
    )


def test_operations_need_read_access_to_their_type_and_are_declared(client: FhirTestClient) -> None:
    patient_reader = {"Authorization": f"Bearer {client.token(scope='system/Patient.rs')}"}
    response = client.get(f"{BASE}/ValueSet/$expand", params={"url": DIAGNOSES}, headers=patient_reader)
    assert response.status_code == 403
    terminology_reader = {"Authorization": f"Bearer {client.token(scope='system/ValueSet.rs')}"}
    response = client.get(f"{BASE}/ValueSet/$expand", params={"url": DIAGNOSES}, headers=terminology_reader)
    assert response.status_code == 200
    capability = get(client, "metadata")
    by_type = {r["type"]: {o["name"] for o in r.get("operation", [])} for r in capability["rest"][0]["resource"]}
    assert {"expand", "validate-code"} <= by_type["ValueSet"]
    assert {"lookup", "subsumes", "validate-code"} <= by_type["CodeSystem"]
    assert "translate" in by_type["ConceptMap"]


# -- search modifiers ------------------------------------------------------------------------------


def finding(subject: str, code: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": SNOMED, "code": "439401001", "display": "Diagnosis"}]},
        "subject": {"reference": subject},
        "valueCodeableConcept": {"coding": [{"system": SNOMED, "code": code}]},
    }


@pytest.fixture
def findings(client: FhirTestClient) -> dict[str, str]:
    subject = f"Patient/{create(client, patient())}"
    return {code: create(client, finding(subject, code)) for code in ("400096001", "254818000", "93655004", "9014002")}


def matched(client: FhirTestClient, **params: str) -> set[str]:
    bundle = get(client, "Observation", **params)
    return {e["resource"]["id"] for e in bundle.get("entry", [])}


def test_below_and_above_follow_is_a(client: FhirTestClient, findings: dict[str, str]) -> None:
    below = matched(client, **{"value-concept:below": f"{SNOMED}|400096001"})
    assert below == {findings["400096001"], findings["254818000"]}
    above = matched(client, **{"value-concept:above": f"{SNOMED}|254818000"})
    assert above == {findings["400096001"], findings["254818000"]}


def test_in_and_not_in_a_shipped_and_a_tenant_value_set(client: FhirTestClient, findings: dict[str, str]) -> None:
    assert matched(client, **{"value-concept:in": DIAGNOSES}) == {
        findings["400096001"],
        findings["254818000"],
        findings["93655004"],
    }
    assert matched(client, **{"value-concept:not-in": DIAGNOSES}) == {findings["9014002"]}
    inflammatory = {
        "resourceType": "ValueSet",
        "url": "urn:example:mine",
        "status": "active",
        "compose": {"include": [{"system": SNOMED, "concept": [{"code": "9014002"}]}]},
    }
    vs_id = create(client, inflammatory)
    assert matched(client, **{"value-concept:in": "urn:example:mine"}) == {findings["9014002"]}
    inflammatory["compose"]["include"][0]["concept"] = [{"code": "93655004"}]
    assert client.put(f"{BASE}/ValueSet/{vs_id}", json={**inflammatory, "id": vs_id}).status_code == 200
    assert matched(client, **{"value-concept:in": "urn:example:mine"}) == {findings["93655004"]}  # not the cached list


def test_modifier_errors(client: FhirTestClient) -> None:
    assert get(client, "Observation", 404, **{"value-concept:in": "urn:example:nope"})["issue"][0]["code"] == (
        "not-found"
    )
    assert get(client, "Observation", 400, **{"value-concept:below": "400096001"})["issue"][0]["code"] == "invalid"
    assert get(client, "Observation", 400, **{"value-concept:below": f"{SNOMED}|123456"})["issue"][0]["code"] == (
        "invalid"
    )
    assert get(client, "Observation", 400, **{"subject.name:in": DIAGNOSES})["issue"][0]["code"] in (
        "invalid",
        "not-supported",
    )


def test_hostile_inputs_are_refused_with_an_outcome(client: FhirTestClient) -> None:
    looping = {
        "resourceType": "ValueSet",
        "url": "urn:example:loop",
        "status": "active",
        "compose": {"include": [{"valueSet": ["urn:example:loop"] * 3}]},
    }
    create(client, looping)
    assert get(client, "ValueSet/$expand", 400, url="urn:example:loop")["issue"][0]["code"] == "too-costly"
    broken = {
        "resourceType": "Parameters",
        "parameter": [
            {
                "name": "valueSet",
                "resource": {"resourceType": "ValueSet", "status": "active", "compose": {"include": 7}},
            }
        ],
    }
    response = client.post(f"{BASE}/ValueSet/$expand", json=broken)
    assert response.status_code in (400, 422) and response.json()["resourceType"] == "OperationOutcome"
    no_code = {"resourceType": "Parameters", "parameter": [{"name": "coding", "valueCoding": {"system": SNOMED}}]}
    assert client.post(f"{BASE}/CodeSystem/$lookup", json=no_code).status_code == 400
