"""Every error a client can cause is an OperationOutcome with the right status, never a 500 or lost data."""

from __future__ import annotations

import random
import string
from pathlib import Path

import pytest

from tests.conftest import BASE, FhirTestClient, make_client
from tests.factories import patient

FHIR_JSON = {"Content-Type": "application/fhir+json"}


def assert_outcome(response, status: int) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["severity"] in ("error", "fatal")
    return body


def test_malformed_json_is_400(client: FhirTestClient) -> None:
    assert_outcome(client.post(f"{BASE}/Patient", content=b'{"resourceType": "Pat', headers=FHIR_JSON), 400)


def test_type_in_body_differs_from_url_is_400(client: FhirTestClient) -> None:
    body = assert_outcome(client.post(f"{BASE}/Observation", json=patient()), 400)
    assert body["issue"][0]["expression"] == ["resourceType"]


def test_unknown_type_is_404(client: FhirTestClient) -> None:
    assert_outcome(client.get(f"{BASE}/Spaceship"), 404)
    assert_outcome(client.post(f"{BASE}/Spaceship", json={"resourceType": "Spaceship"}), 404)
    assert_outcome(client.get(f"{BASE}/MedicinalProduct"), 404)  # R4-only, not served


def test_invalid_resource_is_422_with_expression(client: FhirTestClient) -> None:
    body = assert_outcome(client.post(f"{BASE}/Patient", json=patient(gender="robot")), 422)
    assert body["issue"][0]["expression"] == ["Patient.gender"]
    unknown = assert_outcome(client.post(f"{BASE}/Patient", json=patient(favouriteColour="blue")), 422)
    assert unknown["issue"][0]["expression"] == ["Patient.favouriteColour"]
    nested = assert_outcome(
        client.post(f"{BASE}/Patient", json=patient(name=[{"family": "X", "given": "not-a-list"}])), 422
    )
    assert nested["issue"][0]["expression"][0].startswith("Patient.name[0].given")
    required = assert_outcome(client.post(f"{BASE}/Observation", json={"resourceType": "Observation"}), 422)
    assert required["issue"][0]["expression"][0] in ("Observation.status", "Observation.code")
    assert required["issue"][0]["code"] == "required"


def test_r4b_only_and_foreign_elements_are_rejected(client: FhirTestClient) -> None:
    assert_outcome(client.post(f"{BASE}/Patient", json=patient(meta={"project": "x"})), 422)
    assert_outcome(
        client.post(f"{BASE}/Binary", json={"resourceType": "Binary", "contentType": "text/plain", "url": "x"}), 422
    )


def test_primitive_extensions_are_accepted(client: FhirTestClient) -> None:
    extension = {"extension": [{"url": "http://example.org/precision", "valueCode": "day"}]}
    response = client.post(f"{BASE}/Patient", json=patient(_birthDate=extension))
    assert response.status_code == 201, response.text


def test_version_conflicts(client: FhirTestClient) -> None:
    created = client.post(f"{BASE}/Patient", json=patient()).json()
    url = f"{BASE}/Patient/{created['id']}"
    assert_outcome(client.put(url, json=created, headers={"If-Match": 'W/"2"'}), 412)
    assert_outcome(client.put(url, json=created, headers={"If-Match": "garbage"}), 400)
    body = {**patient(identifier=[{"system": "urn:mrn", "value": "c"}]), "id": created["id"]}
    assert_outcome(client.put(f"{BASE}/Patient?identifier=urn:mrn|c", json=body), 409)


def test_body_larger_than_limit_is_413(tmp_path: Path) -> None:
    with make_client(tmp_path / "var", max_body_bytes=2048) as small:
        big = patient(name=[{"family": "x" * 5000}])
        assert_outcome(small.post(f"{BASE}/Patient", json=big), 413)
        assert small.get(f"{BASE}/Patient").json()["total"] == 0


def test_unsupported_media_type_is_415(client: FhirTestClient) -> None:
    xml = b'<Patient xmlns="http://hl7.org/fhir"/>'
    assert_outcome(client.post(f"{BASE}/Patient", content=xml, headers={"Content-Type": "application/fhir+xml"}), 415)


def test_xml_requested_is_406(client: FhirTestClient) -> None:
    assert_outcome(client.get(f"{BASE}/metadata", params={"_format": "xml"}), 406)
    assert_outcome(client.get(f"{BASE}/metadata", headers={"Accept": "application/fhir+xml"}), 406)
    assert client.get(f"{BASE}/metadata", headers={"Accept": "application/json"}).status_code == 200
    assert client.get(f"{BASE}/metadata", params={"_format": "json"}).status_code == 200


def test_method_not_allowed_and_unknown_paths(client: FhirTestClient) -> None:
    assert_outcome(client.delete(f"{BASE}/metadata"), 405)
    assert_outcome(client.get(f"{BASE}/Patient/x/_history/1/extra"), 404)
    assert_outcome(client.post(f"{BASE}/Patient/x/$nothing"), 404)
    assert_outcome(client.get("/fhir/no-such-tenant/Patient"), 404)
    assert_outcome(client.get("/fhir/..%2F..%2Fetc/Patient"), 404)
    assert client.get("/not-fhir").status_code == 404


def test_invalid_ids(client: FhirTestClient) -> None:
    assert_outcome(client.put(f"{BASE}/Patient/{'x' * 65}", json=patient(id="x" * 65)), 400)
    assert_outcome(client.put(f"{BASE}/Patient/a_b", json=patient(id="a_b")), 400)


HOSTILE_BODIES: list[bytes] = [
    b"",
    b"null",
    b"[]",
    b"42",
    b'"Patient"',
    b'{"resourceType": null}',
    b'{"resourceType": 7}',
    b'{"resourceType": "Patient", "name": "x"}',
    b'{"resourceType": "Patient", "name": [null]}',
    b'{"resourceType": "Patient", "birthDate": 19700101}',
    b'{"resourceType": "Patient", "contained": [{"resourceType": "Patient", "contained": []}]}',
    b'{"resourceType": "Patient", "contained": [{"resourceType": "Nope"}]}',
    b'{"resourceType": "Patient", "id": "../../x"}',
    b'{"resourceType": "Patient", "meta": {"versionId": ["1"]}}',
    b'{"resourceType": "Observation", "status": "final", "code": {}, "valueQuantity": {"value": 1e999}}',
    b"\xff\xfe\x00garbage",
    b'{"resourceType": "Patient", "name": [{"family": "\\ud800"}]}',
    b"{" * 5000 + b"}" * 5000,
    b'{"resourceType": "Bundle", "type": "transaction", "entry": [{"request": {"method": "POST"}}]}',
    b'{"resourceType": "Bundle", "type": "transaction", "entry": [null]}',
]


@pytest.mark.parametrize("body", HOSTILE_BODIES, ids=range(len(HOSTILE_BODIES)))
@pytest.mark.parametrize("target", ["Patient", "Patient/abc", ""])
def test_hostile_bodies_never_crash(client: FhirTestClient, body: bytes, target: str) -> None:
    method = "PUT" if "/" in target else "POST"
    response = client.request(method, f"{BASE}/{target}".rstrip("/"), content=body, headers=FHIR_JSON)
    assert 400 <= response.status_code < 500
    assert response.json()["resourceType"] == "OperationOutcome"


HOSTILE_QUERIES = [
    "name=%00",
    "birthdate=ge" + "9" * 400,
    "_count=99999999999999999999",
    "_count=abc",
    "_sort=" + ",".join(["name"] * 50),
    "value-quantity=1e999",
    "value-quantity=NaN",
    "_has:Observation=1",
    "_has:Observation:subject=1",
    "_has:Nope:subject:code=1",
    "general-practitioner." * 20 + "name=x",
    "identifier=a|b|c",
    "_include=" + ":" * 10,
    "_lastUpdated=gt2020-13-45",
    "name:missing=maybe",
    "_id=" + "," * 1000,
    "_total=whatever",
    "_summary=everything",
    "_elements=" + "x," * 1000,
]


@pytest.mark.parametrize("query", HOSTILE_QUERIES)
def test_hostile_queries_never_crash(client: FhirTestClient, query: str) -> None:
    response = client.get(f"{BASE}/Patient?{query}")
    assert response.status_code in (200, 400), response.text
    assert response.json()["resourceType"] in ("Bundle", "OperationOutcome")


def test_random_bytes_never_crash_and_store_stays_consistent(client: FhirTestClient) -> None:
    rng = random.Random(1234)
    kept = client.post(f"{BASE}/Patient", json=patient(family="Kept")).json()
    alphabet = string.printable.encode() + b'{}[]":,\x00\xff'
    for _ in range(200):
        body = bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 200)))
        path = rng.choice(["Patient", f"Patient/{kept['id']}", "", "Observation/_search"])
        method = rng.choice(["POST", "PUT", "PATCH"])
        response = client.request(method, f"{BASE}/{path}".rstrip("/"), content=body, headers=FHIR_JSON)
        assert response.status_code < 500
    assert client.get(f"{BASE}/Patient/{kept['id']}").json()["name"][0]["family"] == "Kept"
