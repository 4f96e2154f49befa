"""SMART scopes enforced on every path: interactions, Bundles, includes, $everything, compartments, DICOMweb."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fhir_server.security.scopes import Access, grant, parse_scope, role_scopes
from tests.conftest import BASE, FhirTestClient, make_client
from tests.factories import patient
from tests.fhir_server.security.smart import IdentityProvider


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def observation(patient_id: str, code: str = "8310-5") -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "code": {"coding": [{"system": "http://loinc.org",
            "code": code}]}, "subject": {"reference": f"Patient/{patient_id}"}}  # fmt: skip


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("system/Patient.rs", "system/Patient.rs"),
        ("patient/*.read", "patient/*.rs"),
        ("user/Observation.write", "user/Observation.cud"),
        ("user/Observation.*", "user/Observation.cruds"),
        ("user/Observation.sr", None),  # out of order
        ("user/Observation.rr", None),
        ("user/Observation.rs?category=laboratory", None),  # never granted unnarrowed
        ("openid", None),
        ("launch/patient", None),
    ],
)
def test_scope_grammar(text: str, expected: str | None) -> None:
    scope = parse_scope(text)
    assert (str(scope) if scope else None) == expected


def test_grant_is_what_the_roles_cover() -> None:
    allowed = role_scopes(["clinician-reviewer"])
    assert [str(s) for s in grant("user/Patient.r user/Patient.d system/Patient.r", allowed)] == ["user/Patient.r"]
    assert grant(None, allowed) == allowed
    access = Access("default", "c", tuple(grant("patient/Observation.rs", role_scopes(["admin"]))), patient="p1")
    assert access.decide("Observation", "r") == "none"  # admin grants system/, not patient/
    bounded = Access("default", "c", (parse_scope("patient/Observation.rs"),), patient="p1")  # type: ignore[arg-type]
    assert bounded.decide("Observation", "s") == "patient" and bounded.decide("Patient", "r") == "none"


@pytest.fixture
def seeded(client: FhirTestClient) -> dict[str, str]:
    ids = {}
    for name in ("alice", "bob"):
        ids[name] = client.post(f"{BASE}/Patient", json=patient(family=name)).json()["id"]
        ids[f"{name}-obs"] = client.post(f"{BASE}/Observation", json=observation(ids[name])).json()["id"]
    return ids


def test_type_and_interaction_are_enforced(client: FhirTestClient, seeded: dict[str, str]) -> None:
    reader = bearer(client.token(scope="system/Patient.rs"))
    assert client.get(f"{BASE}/Patient/{seeded['alice']}", headers=reader).status_code == 200
    refused = client.post(f"{BASE}/Patient", json=patient(), headers=reader)
    assert refused.status_code == 403 and refused.json()["issue"][0]["code"] == "forbidden"
    assert client.get(f"{BASE}/Observation", headers=reader).status_code == 403
    assert client.get(f"{BASE}/Observation/{seeded['alice-obs']}", headers=reader).status_code == 403
    assert client.delete(f"{BASE}/Patient/{seeded['alice']}", headers=reader).status_code == 403
    assert client.get(f"{BASE}/Observation/_history", headers=reader).status_code == 403
    everything = [e["resource"]["resourceType"] for e in
                  client.get(f"{BASE}/_history", headers=bearer(client.token())).json()["entry"]]  # fmt: skip
    assert "Observation" in everything
    assert client.get(f"{BASE}/_history", headers=reader).status_code == 403


def test_bundles_includes_and_everything_only_show_what_is_allowed(
    client: FhirTestClient, seeded: dict[str, str]
) -> None:
    reader = bearer(client.token(scope="system/Patient.rs"))
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": f"Patient/{seeded['alice']}"}},
        {"request": {"method": "GET", "url": f"Observation/{seeded['alice-obs']}"}},
        {"request": {"method": "POST", "url": "Patient"}, "resource": patient()}]}  # fmt: skip
    answer = client.post(BASE, json=batch, headers=reader).json()
    assert [e["response"]["status"][:3] for e in answer["entry"]] == ["200", "403", "403"]
    transaction = {**batch, "type": "transaction", "entry": batch["entry"][2:]}
    assert client.post(BASE, json=transaction, headers=reader).status_code == 403

    found = client.get(f"{BASE}/Patient", params={"_revinclude": "Observation:subject"}, headers=reader).json()
    assert {e["resource"]["resourceType"] for e in found["entry"]} == {"Patient"}
    admin_found = client.get(f"{BASE}/Patient", params={"_revinclude": "Observation:subject"}).json()
    assert "Observation" in {e["resource"]["resourceType"] for e in admin_found["entry"]}

    system = client.get(BASE, params={"_lastUpdated": "gt2000-01-01"}, headers=reader).json()
    assert {e["resource"]["resourceType"] for e in system["entry"]} == {"Patient"}
    everything = client.get(f"{BASE}/Patient/{seeded['alice']}/$everything", headers=reader).json()
    assert [e["resource"]["resourceType"] for e in everything["entry"]] == ["Patient"]


@pytest.fixture
def idp(tmp_path: Path) -> Any:
    provider = IdentityProvider(tmp_path)
    with make_client(tmp_path / "var", **provider.settings) as c:
        c.patient_token = lambda patient_id, scope: provider.headers(scope, patient_id)  # type: ignore[attr-defined]
        yield c


def test_patient_scopes_stay_in_the_patients_compartment(idp: FhirTestClient) -> None:
    ids = {}
    for name in ("alice", "bob"):
        ids[name] = idp.post(f"{BASE}/Patient", json=patient(family=name)).json()["id"]
        ids[f"{name}-obs"] = idp.post(f"{BASE}/Observation", json=observation(ids[name])).json()["id"]
    alice = idp.patient_token(ids["alice"], "patient/Patient.rs patient/Observation.cruds")  # type: ignore[attr-defined]
    assert idp.get(f"{BASE}/Patient/{ids['alice']}", headers=alice).status_code == 200
    assert idp.get(f"{BASE}/Patient/{ids['bob']}", headers=alice).status_code == 404
    assert idp.get(f"{BASE}/Observation/{ids['bob-obs']}", headers=alice).status_code == 404
    assert idp.get(f"{BASE}/Observation/{ids['bob-obs']}/_history", headers=alice).status_code == 404
    found = idp.get(f"{BASE}/Observation", headers=alice).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [ids["alice-obs"]]
    patients = idp.get(f"{BASE}/Patient", headers=alice).json()
    assert [e["resource"]["id"] for e in patients["entry"]] == [ids["alice"]]
    assert idp.get(f"{BASE}/Patient/{ids['bob']}/Observation", headers=alice).status_code == 404
    assert idp.get(f"{BASE}/Patient/{ids['alice']}/Observation", headers=alice).json()["total"] == 1

    assert idp.post(f"{BASE}/Observation", json=observation(ids["alice"]), headers=alice).status_code == 201
    assert idp.post(f"{BASE}/Observation", json=observation(ids["bob"]), headers=alice).status_code == 403
    moved = {**observation(ids["bob"]), "id": ids["alice-obs"]}
    assert idp.put(f"{BASE}/Observation/{ids['alice-obs']}", json=moved, headers=alice).status_code == 403
    hijack = {**observation(ids["alice"]), "id": ids["bob-obs"]}
    assert idp.put(f"{BASE}/Observation/{ids['bob-obs']}", json=hijack, headers=alice).status_code == 404
    assert idp.delete(f"{BASE}/Observation/{ids['bob-obs']}", headers=alice).status_code == 404
    assert idp.get(f"{BASE}/Observation/{ids['bob-obs']}").status_code == 200  # untouched
    assert idp.get(f"{BASE}/Patient/{ids['bob']}/$everything", headers=alice).status_code == 403
    everything = idp.get(f"{BASE}/Patient/{ids['alice']}/$everything", headers=alice).json()
    assert {e["resource"]["id"] for e in everything["entry"]} >= {ids["alice"], ids["alice-obs"]}
    assert ids["bob-obs"] not in {e["resource"]["id"] for e in everything["entry"]}


def test_dicomweb_needs_imaging_scopes(client: FhirTestClient) -> None:
    assert client.get("/dicomweb/default/studies").status_code == 204  # no studies yet
    no_token = client.get("/dicomweb/default/studies", headers={"Authorization": ""})
    assert no_token.status_code == 401 and no_token.headers["www-authenticate"].startswith("Bearer")
    reader = bearer(client.token(scope="system/Patient.rs"))
    assert client.get("/dicomweb/default/studies", headers=reader).status_code == 403
    imaging = bearer(client.token(roles=("imaging-device",)))  # system/ImagingStudy.crs: stores, reads no names
    assert client.get("/dicomweb/default/studies", headers=imaging).status_code == 403
    both = bearer(client.token(scope="system/ImagingStudy.rs system/Patient.r"))
    assert client.get("/dicomweb/default/studies", headers=both).status_code == 204
    body = b"--x\r\nContent-Type: application/dicom\r\n\r\nx\r\n--x--\r\n"
    stow = {"Content-Type": 'multipart/related; type="application/dicom"; boundary=x'}
    assert client.post("/dicomweb/default/studies", content=body, headers={**stow, **reader}).status_code == 403
    assert client.post("/dicomweb/default/studies", content=body, headers={**stow, **imaging}).status_code == 409
