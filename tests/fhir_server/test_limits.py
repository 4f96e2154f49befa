"""Every bound of fhir_server/limits.py answers an OperationOutcome naming it, never a 500 (issue 19).

Each request here answered 500 (or took minutes) before the bounds existed; the FhirTestClient
fails any 5xx by itself.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import orjson
import pytest

from fhir_server.limits import (
    MAX_ARRAY_ITEMS,
    MAX_CHAIN_DEPTH,
    MAX_JSON_DEPTH,
    MAX_OR_VALUES,
    MAX_PARAMETER_REPEATS,
    MAX_RESOURCE_VALUES,
    MAX_SEARCH_PARAMETERS,
    MAX_SORT_KEYS,
)
from tests.conftest import BASE, FhirTestClient
from tests.factories import observation, patient

FHIR_JSON = {"Content-Type": "application/fhir+json"}
FORM = "application/x-www-form-urlencoded"


def refused(response: Any, status: int, *words: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    issue = response.json()["issue"][0]
    text = issue["diagnostics"] + " ".join(issue.get("expression", []))
    for word in words:
        assert word in text, text
    return dict(issue)


@pytest.fixture
def patient_id(client: FhirTestClient) -> str:
    return str(client.post(f"{BASE}/Patient", json=patient()).json()["id"])


def test_json_patch_replacing_the_root_with_an_array_is_422(client: FhirTestClient, patient_id: str) -> None:
    body = b'[{"op": "replace", "path": "", "value": [1, 2]}]'
    headers = {"Content-Type": "application/json-patch+json"}
    refused(client.patch(f"{BASE}/Patient/{patient_id}", content=body, headers=headers), 422, "not a JSON object")
    assert client.get(f"{BASE}/Patient/{patient_id}").json()["meta"]["versionId"] == "1"


def test_json_patch_cannot_grow_a_resource_without_bound(client: FhirTestClient, patient_id: str) -> None:
    """Each copy of the name list into itself doubles it: 40 copies would make a trillion values."""
    doubling = [{"op": "copy", "from": "/name", "path": "/name/-"} for _ in range(40)]
    response = client.patch(
        f"{BASE}/Patient/{patient_id}", json=doubling, headers={"Content-Type": "application/json-patch+json"}
    )
    refused(response, 413, str(MAX_RESOURCE_VALUES))


def chain(hops: int) -> str:
    return "link:Patient." * hops + "name=x"


def test_chains_and_has_beyond_the_depth_bound_are_400(client: FhirTestClient) -> None:
    assert client.get(f"{BASE}/Patient?{chain(MAX_CHAIN_DEPTH)}").status_code == 200
    issue = refused(client.get(f"{BASE}/Patient?{chain(10)}"), 400, f"at most {MAX_CHAIN_DEPTH}")
    assert issue["code"] == "too-costly" and issue["expression"] == [chain(10).split("=")[0]]
    has = "_has:Observation:has-member:" * 3 + "_has:Observation:subject:code=x"
    refused(client.get(f"{BASE}/Patient?{has}"), 400, f"at most {MAX_CHAIN_DEPTH}")


@pytest.mark.parametrize(
    "query",
    [
        # three hops, each with the heaviest leaves: one more nesting level overflowed SQLite's parser stack
        "has-member.has-member.has-member.code-value-quantity=http://loinc.org|8867-4$gt70|http://u|mg",
        "has-member.has-member.has-member.value-quantity=gt5|http://u|mg,lt3|http://u|kg",
        "has-member.has-member.subject.code=a|b,c|d",
        "_has:Observation:has-member:_has:Observation:has-member:has-member.code=a|b,c|d",
        "subject:Patient.link:Patient.general-practitioner:Practitioner.name=x,y",
    ],
)
def test_searches_at_the_depth_bound_answer(client: FhirTestClient, query: str) -> None:
    assert client.get(f"{BASE}/Observation?{query}").status_code == 200


def test_repeated_and_numerous_parameters_are_400(client: FhirTestClient) -> None:
    many = "&".join(f"name=x{i}" for i in range(1000))
    refused(client.get(f"{BASE}/Patient?{many}"), 400, f"at most {MAX_SEARCH_PARAMETERS}")
    repeated = "&".join(["name=x"] * (MAX_PARAMETER_REPEATS + 1))
    refused(client.get(f"{BASE}/Patient?{repeated}"), 400, "name", f"at most {MAX_PARAMETER_REPEATS}")
    alternatives = ",".join(["x"] * (MAX_OR_VALUES + 1))
    refused(client.get(f"{BASE}/Patient?name={alternatives}"), 400, f"at most {MAX_OR_VALUES}")
    form = urlencode([(f"name:{['exact', 'contains'][i % 2]}", f"x{i}") for i in range(MAX_SEARCH_PARAMETERS + 1)])
    posted = client.post(f"{BASE}/Patient/_search", content=form, headers={"Content-Type": FORM})
    refused(posted, 400, f"at most {MAX_SEARCH_PARAMETERS}")


def test_sort_keys_are_bounded(client: FhirTestClient) -> None:
    keys = ",".join(["name", "birthdate", "family", "given"] * 50)
    refused(client.get(f"{BASE}/Patient?_sort={keys}"), 400, f"at most {MAX_SORT_KEYS}")
    allowed = ",".join(["name", "-birthdate", "family", "given", "_id"][:MAX_SORT_KEYS])
    assert client.get(f"{BASE}/Patient?_sort={allowed}").status_code == 200


def test_version_numbers_and_etags_are_bounded(client: FhirTestClient, patient_id: str) -> None:
    url = f"{BASE}/Patient/{patient_id}"
    refused(client.get(f"{url}/_history/99999999999999999999"), 400, "_history", "18")
    current = client.get(url).json()
    refused(client.put(url, json=current, headers={"If-Match": 'W/"' + "9" * 5000 + '"'}), 400, "If-Match", "18")
    assert client.get(f"{url}/_history/²").status_code == 404  # "²".isdigit() is True, int("²") fails
    assert client.get(f"{BASE}/Patient?_count=²").status_code == 400
    assert client.get(f"{BASE}/Patient?_offset=" + "9" * 30).status_code == 400
    assert client.get(f"{url}/_history?_offset=" + "9" * 5000).status_code == 400


def nested_extension(depth: int) -> dict[str, Any]:
    extension: dict[str, Any] = {"url": "http://example.org/x", "valueString": "x"}
    for _ in range(depth):
        extension = {"url": "http://example.org/x", "extension": [extension]}
    return extension


def test_deep_nesting_is_400_naming_the_bound(client: FhirTestClient) -> None:
    response = client.post(f"{BASE}/Patient", json=patient(extension=[nested_extension(150)]))
    issue = refused(response, 400, f"more than {MAX_JSON_DEPTH} deep")
    assert issue["expression"][0].startswith("Patient.extension[0].extension[0]")
    assert client.post(f"{BASE}/Patient", json=patient(extension=[nested_extension(40)])).status_code == 201


def test_huge_arrays_are_413_at_once(client: FhirTestClient) -> None:
    """The 5 MB Patient with 1,000,000 given names took 312 s and 3.4 GB."""
    body = orjson.dumps(patient(name=[{"family": "X", "given": ["G"] * 1_000_000}]))
    issue = refused(client.post(f"{BASE}/Patient", content=body, headers=FHIR_JSON), 413, str(MAX_ARRAY_ITEMS))
    assert issue["expression"] == ["Patient.name[0].given"]
    assert client.get(f"{BASE}/Patient").json()["total"] == 0


def test_resources_beyond_the_value_budget_are_413(client: FhirTestClient) -> None:
    names = [{"family": "X", "given": ["G"] * 9_000} for _ in range(3)]  # every array within its bound
    refused(client.post(f"{BASE}/Patient", json=patient(name=names)), 413, str(MAX_RESOURCE_VALUES))


def test_duplicate_keys_are_400(client: FhirTestClient, patient_id: str) -> None:
    smuggled = b'{"resourceType": "Observation", "resourceType": "Patient", "gender": "male"}'
    refused(client.post(f"{BASE}/Observation", content=smuggled, headers=FHIR_JSON), 400, "resourceType", "unique")
    refused(client.post(f"{BASE}/Patient", content=smuggled, headers=FHIR_JSON), 400, "resourceType")
    inner = b'{"resourceType": "Patient", "name": [{"family": "A", "family": "B"}]}'
    refused(client.post(f"{BASE}/Patient", content=inner, headers=FHIR_JSON), 400, "family")
    escaped = b'{"resourceType": "Patient", "gender": "male", "gender": "female", "id": "\\u003a"}'
    refused(client.post(f"{BASE}/Patient", content=escaped, headers=FHIR_JSON), 400, "gender")
    assert client.get(f"{BASE}/Patient").json()["total"] == 1


def test_json_merge_patch_as_fhirpy_sends_it(client: FhirTestClient, patient_id: str) -> None:
    url = f"{BASE}/Patient/{patient_id}"
    patched = client.patch(url, json={"gender": "male", "birthDate": None}, headers={"If-Match": 'W/"1"'})
    assert patched.status_code == 200, patched.text
    assert patched.json()["gender"] == "male" and "birthDate" not in patched.json()
    merge = {"Content-Type": "application/merge-patch+json"}
    assert client.patch(url, content=b'{"active": true}', headers=merge).json()["active"] is True
    refused(client.patch(url, json={"gender": "robot"}), 422, "gender")
    parameters = {"resourceType": "Parameters", "parameter": [{"name": "operation"}]}
    refused(client.patch(url, json=parameters), 415, "FHIRPath Patch")
    json_patch = {"Content-Type": "application/json-patch+json"}
    refused(client.patch(url, json={"op": "add"}, headers=json_patch), 400, "array")


def test_head_answers_like_get_without_body(client: FhirTestClient, patient_id: str) -> None:
    got = client.get(f"{BASE}/Patient/{patient_id}")
    head = client.head(f"{BASE}/Patient/{patient_id}")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["etag"] == got.headers["etag"] == 'W/"1"'
    assert head.headers["content-length"] == str(len(got.content))
    assert client.head(f"{BASE}/Patient/nope").status_code == 404


def test_legacy_json_fhir_media_type(client: FhirTestClient) -> None:
    legacy = "application/json+fhir"
    created = client.post(f"{BASE}/Patient", content=orjson.dumps(patient()), headers={"Content-Type": legacy})
    assert created.status_code == 201, created.text
    assert client.get(f"{BASE}/Patient", headers={"Accept": legacy}).status_code == 200
    assert client.get(f"{BASE}/metadata", params={"_format": legacy}).status_code == 200


def test_lenient_handling_ignores_unknown_underscore_parameters(client: FhirTestClient, patient_id: str) -> None:
    strict = client.get(f"{BASE}/Patient?_totalMethod=count&_count=0")
    refused(strict, 400, "_totalMethod")
    lenient = client.get(f"{BASE}/Patient?_totalMethod=count&_count=0", headers={"Prefer": "handling=lenient"})
    assert lenient.status_code == 200 and lenient.json()["total"] == 1
    warning = client.get(f"{BASE}/Patient?_totalMethod=count", headers={"Prefer": "handling=lenient"}).json()
    assert any("_totalMethod" in e["resource"].get("issue", [{}])[0].get("diagnostics", "") for e in warning["entry"])
    # known _ parameters with bad values stay errors: lenient ignores what it does not know, not mistakes
    refused(client.get(f"{BASE}/Patient?_sort=nope", headers={"Prefer": "handling=lenient"}), 400, "nope")


def test_observation_chain_search_still_finds(client: FhirTestClient, patient_id: str) -> None:
    """The flatter SQL for chains (fewer parentheses) finds the same resources."""
    client.post(f"{BASE}/Observation", json=observation(f"Patient/{patient_id}"))
    found = client.get(f"{BASE}/Observation?subject:Patient.name=doe&subject:Patient.gender=female,male")
    assert found.json()["total"] == 1
    assert client.get(f"{BASE}/Observation?subject:Patient.name=nobody").json()["total"] == 0
