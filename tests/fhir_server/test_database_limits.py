"""Values past what PostgreSQL indexes or stores: a FHIR answer on every engine, never a 500
(fhir_server/storage/index_keys.py, fhir_server/storage/postgres/errors.py)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from tests.conftest import BASE, ENGINES, FhirTestClient, engine_settings


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> dict[str, Any]:
    return engine_settings(request)


def test_a_patient_with_over_long_values_is_stored_and_found(client: FhirTestClient) -> None:
    long_id = hashlib.sha512(b"mrn").hexdigest() * 47  # 3,008 incompressible characters
    cjk = "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(1024))
    system = "urn:oid:1.2.36.146.595.217.0.1." + "1" * 2900
    patient = {
        "resourceType": "Patient",
        "name": [{"family": cjk}],
        "identifier": [{"system": system, "value": long_id}],
    }
    created = client.post(f"{BASE}/Patient", json=patient)
    assert created.status_code == 201, created.text
    for query in ({"identifier": long_id}, {"identifier": f"{system}|{long_id}"}, {"family": cjk}):
        found = client.get(f"{BASE}/Patient", params=query).json()
        assert [e["resource"]["id"] for e in found.get("entry", [])] == [created.json()["id"]], query
    assert client.get(f"{BASE}/Patient", params={"identifier": long_id[:-1] + "x"}).json().get("entry", []) == []


def test_a_value_the_database_cannot_store_is_an_operation_outcome(client: FhirTestClient) -> None:
    """PostgreSQL text holds no NUL character (SQLSTATE 22021 on the index row): refused with a 4xx there."""
    patient = {"resourceType": "Patient", "name": [{"family": "Nul\u0000Family"}]}
    response = client.post(f"{BASE}/Patient", json=patient)
    on_postgres = bool(client.app.state.settings.storage)  # type: ignore[attr-defined]
    assert response.status_code == (400 if on_postgres else 201), response.text
    if on_postgres:
        assert response.json()["issue"][0]["code"] == "value" and "22021" in response.text
