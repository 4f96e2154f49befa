"""Create, read, vread, update, patch, delete and history through the HTTP API (http.html)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import BASE, FhirTestClient, make_client
from tests.factories import observation, patient

FHIR_JSON = {"Content-Type": "application/fhir+json"}


def create(client: FhirTestClient, resource: dict, **headers: str) -> dict:
    response = client.post(f"{BASE}/{resource['resourceType']}", json=resource, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def test_create_assigns_id_version_and_headers(client: FhirTestClient) -> None:
    response = client.post(f"{BASE}/Patient", json=patient(), headers=FHIR_JSON)
    assert response.status_code == 201
    body = response.json()
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["lastUpdated"].startswith("20")
    assert response.headers["etag"] == 'W/"1"'
    assert response.headers["location"].endswith(f"/Patient/{body['id']}/_history/1")
    assert "GMT" in response.headers["last-modified"]


def test_client_supplied_id_on_create_is_replaced(client: FhirTestClient) -> None:
    body = create(client, patient(id="mine"))
    assert body["id"] != "mine"


def test_read_and_vread(client: FhirTestClient) -> None:
    created = create(client, patient())
    read = client.get(f"{BASE}/Patient/{created['id']}")
    assert read.status_code == 200
    assert read.json() == created
    assert read.headers["etag"] == 'W/"1"'
    assert client.get(f"{BASE}/Patient/{created['id']}/_history/1").json() == created
    assert client.get(f"{BASE}/Patient/{created['id']}/_history/2").status_code == 404


def test_read_unknown_is_404_with_outcome(client: FhirTestClient) -> None:
    response = client.get(f"{BASE}/Patient/nope")
    assert response.status_code == 404
    assert response.json()["resourceType"] == "OperationOutcome"


def test_if_none_match_gives_304(client: FhirTestClient) -> None:
    created = create(client, patient())
    response = client.get(f"{BASE}/Patient/{created['id']}", headers={"If-None-Match": 'W/"1"'})
    assert response.status_code == 304


def test_update_bumps_version_and_keeps_history(client: FhirTestClient) -> None:
    created = create(client, patient())
    changed = {**created, "gender": "male"}
    response = client.put(f"{BASE}/Patient/{created['id']}", json=changed)
    assert response.status_code == 200
    assert response.json()["meta"]["versionId"] == "2"
    assert client.get(f"{BASE}/Patient/{created['id']}/_history/1").json()["gender"] == "female"
    history = client.get(f"{BASE}/Patient/{created['id']}/_history").json()
    assert history["type"] == "history"
    assert history["total"] == 2
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["2", "1"]


def test_update_as_create_with_client_id(client: FhirTestClient) -> None:
    response = client.put(f"{BASE}/Patient/p-1", json=patient(id="p-1"))
    assert response.status_code == 201
    assert response.json()["id"] == "p-1"
    assert client.get(f"{BASE}/Patient/p-1").status_code == 200


def test_update_id_mismatch_and_missing_id_are_400(client: FhirTestClient) -> None:
    assert client.put(f"{BASE}/Patient/a", json=patient(id="b")).status_code == 400
    assert client.put(f"{BASE}/Patient/a", json=patient()).status_code == 400


def test_if_match_is_enforced(client: FhirTestClient) -> None:
    created = create(client, patient())
    url = f"{BASE}/Patient/{created['id']}"
    stale = client.put(url, json=created, headers={"If-Match": 'W/"7"'})
    assert stale.status_code == 412
    assert stale.json()["resourceType"] == "OperationOutcome"
    fresh = client.put(url, json=created, headers={"If-Match": 'W/"1"'})
    assert fresh.status_code == 200


def test_prefer_return(client: FhirTestClient) -> None:
    minimal = client.post(f"{BASE}/Patient", json=patient(), headers={"Prefer": "return=minimal"})
    assert minimal.status_code == 201
    assert minimal.content == b""
    assert minimal.headers["location"]
    outcome = client.post(f"{BASE}/Patient", json=patient(), headers={"Prefer": "return=OperationOutcome"})
    assert outcome.json()["resourceType"] == "OperationOutcome"


def test_json_patch(client: FhirTestClient) -> None:
    created = create(client, patient())
    ops = [{"op": "replace", "path": "/gender", "value": "other"}, {"op": "add", "path": "/active", "value": True}]
    response = client.patch(
        f"{BASE}/Patient/{created['id']}", json=ops, headers={"Content-Type": "application/json-patch+json"}
    )
    assert response.status_code == 200
    assert response.json()["gender"] == "other"
    assert response.json()["active"] is True
    assert response.json()["meta"]["versionId"] == "2"


def test_patch_that_breaks_the_resource_is_422_and_changes_nothing(client: FhirTestClient) -> None:
    created = create(client, patient())
    url = f"{BASE}/Patient/{created['id']}"
    bad = client.patch(url, json=[{"op": "replace", "path": "/gender", "value": "robot"}])
    assert bad.status_code == 422
    unappliable = client.patch(url, json=[{"op": "remove", "path": "/nothing"}])
    assert unappliable.status_code == 422
    assert client.get(url).json()["meta"]["versionId"] == "1"


def test_delete_is_a_versioned_tombstone(client: FhirTestClient) -> None:
    created = create(client, patient())
    url = f"{BASE}/Patient/{created['id']}"
    deleted = client.delete(url)
    assert deleted.status_code == 200
    assert deleted.headers["etag"] == 'W/"2"'
    gone = client.get(url)
    assert gone.status_code == 410
    assert gone.json()["issue"][0]["code"] == "deleted"
    assert client.get(f"{url}/_history/1").status_code == 200
    history = client.get(f"{url}/_history").json()
    assert history["entry"][0]["request"]["method"] == "DELETE"
    assert "resource" not in history["entry"][0]
    assert client.delete(url).status_code == 200  # idempotent
    again = client.put(url, json={**created, "gender": "male"})
    assert again.status_code == 201
    assert again.json()["meta"]["versionId"] == "3"


def test_conditional_create(client: FhirTestClient) -> None:
    identified = patient(identifier=[{"system": "urn:mrn", "value": "42"}])
    first = client.post(f"{BASE}/Patient", json=identified, headers={"If-None-Exist": "identifier=urn:mrn|42"})
    assert first.status_code == 201
    second = client.post(f"{BASE}/Patient", json=identified, headers={"If-None-Exist": "identifier=urn:mrn|42"})
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    client.post(f"{BASE}/Patient", json=identified)
    third = client.post(f"{BASE}/Patient", json=identified, headers={"If-None-Exist": "identifier=urn:mrn|42"})
    assert third.status_code == 412


def test_conditional_update_and_delete(client: FhirTestClient) -> None:
    body = patient(identifier=[{"system": "urn:mrn", "value": "7"}])
    created = client.put(f"{BASE}/Patient?identifier=urn:mrn|7", json=body)
    assert created.status_code == 201
    updated = client.put(f"{BASE}/Patient?identifier=urn:mrn|7", json={**body, "gender": "male"})
    assert updated.status_code == 200
    assert updated.json()["id"] == created.json()["id"]
    assert updated.json()["meta"]["versionId"] == "2"
    removed = client.delete(f"{BASE}/Patient?identifier=urn:mrn|7")
    assert removed.status_code == 200
    assert client.get(f"{BASE}/Patient/{created.json()['id']}").status_code == 410


def test_type_and_system_history_with_since_and_count(tmp_path: Path) -> None:
    with make_client(tmp_path / "var", audit_enabled=False) as client:  # AuditEvents would join system history
        _history_checks(client)


def _history_checks(client: FhirTestClient) -> None:
    first = create(client, patient())
    since = first["meta"]["lastUpdated"]
    create(client, patient(family="Roe"))
    p = create(client, patient(family="Poe"))
    create(client, observation(f"Patient/{p['id']}"))
    type_history = client.get(f"{BASE}/Patient/_history").json()
    assert type_history["total"] == 3
    system = client.get(f"{BASE}/_history", params={"_count": 2}).json()
    assert system["total"] == 4
    assert len(system["entry"]) == 2
    assert any(link["relation"] == "next" for link in system["link"])
    recent = client.get(f"{BASE}/Patient/_history", params={"_since": since}).json()
    assert recent["total"] == 3
    assert client.get(f"{BASE}/_history", params={"_since": "yesterday"}).status_code == 400


def test_summary_and_elements(client: FhirTestClient) -> None:
    created = create(
        client, patient(text={"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>'})
    )
    url = f"{BASE}/Patient/{created['id']}"
    summary = client.get(url, params={"_summary": "true"}).json()
    assert "name" in summary
    assert "text" not in summary
    assert summary["meta"]["tag"][0]["code"] == "SUBSETTED"
    elements = client.get(url, params={"_elements": "gender"}).json()
    assert set(elements) == {"resourceType", "id", "meta", "gender"}
    data = client.get(url, params={"_summary": "data"}).json()
    assert "text" not in data and "name" in data


def test_capability_statement(client: FhirTestClient) -> None:
    response = client.get(f"{BASE}/metadata")
    assert response.status_code == 200
    statement = response.json()
    assert statement["fhirVersion"] == "4.0.1"
    resources = {r["type"]: r for r in statement["rest"][0]["resource"]}
    assert "DiagnosticReport" in resources
    assert "MedicinalProduct" not in resources
    assert "MedicinalProduct" in statement["rest"][0]["documentation"]
    names = {p["name"] for p in resources["Observation"]["searchParam"]}
    assert {"code", "subject", "value-quantity", "code-value-quantity", "_lastUpdated"} <= names
    assert resources["Patient"]["operation"][0]["name"] == "everything"
