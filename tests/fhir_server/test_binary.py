"""Binary (binary.html): its content served in native form, sealed and guarded as the patient data its
securityContext says it is."""

from __future__ import annotations

import base64
import sqlite3
from pathlib import Path
from typing import Any

from tests.conftest import BASE, FhirTestClient
from tests.fhir_server.security.test_scopes import idp  # noqa: F401  (the fixture)

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4  # content a viewer would draw; any bytes do here


def media(client: FhirTestClient, patient_id: str) -> str:
    body = {"resourceType": "Media", "status": "completed", "subject": {"reference": f"Patient/{patient_id}"},
            "content": {"contentType": "image/png"}}  # fmt: skip
    return str(client.post(f"{BASE}/Media", json=body).json()["id"])


def binary(client: FhirTestClient, context: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Binary",
        "contentType": "image/png",
        "data": base64.b64encode(PNG).decode(),
    }
    if context:
        body["securityContext"] = {"reference": context}
    created = client.post(f"{BASE}/Binary", json=body)
    assert created.status_code == 201, created.text
    return dict(created.json())


def test_a_binary_is_read_in_its_native_form(client: FhirTestClient) -> None:
    patient_id = client.post(f"{BASE}/Patient", json={"resourceType": "Patient"}).json()["id"]
    context = f"Media/{media(client, patient_id)}"
    created = binary(client, context)
    url = f"{BASE}/Binary/{created['id']}"
    for accept in ("image/png", "image/*", "*/*"):
        raw = client.get(url, headers={"Accept": accept})
        assert raw.status_code == 200 and raw.content == PNG, accept
        assert raw.headers["content-type"] == "image/png" and raw.headers["x-security-context"] == context
        assert raw.headers["etag"] == 'W/"1"'
    assert client.get(f"{url}/_history/1", headers={"Accept": "image/png"}).content == PNG
    as_fhir = client.get(url, headers={"Accept": "application/fhir+json"})
    assert as_fhir.json()["resourceType"] == "Binary" and as_fhir.json()["data"] == created["data"]
    assert client.get(url, params={"_format": "json"}, headers={"Accept": "image/png"}).json()["id"] == created["id"]
    missing = client.get(f"{BASE}/Binary/unknown", headers={"Accept": "image/png"})
    assert missing.status_code == 404 and missing.json()["resourceType"] == "OperationOutcome"
    assert client.get(f"{BASE}/Patient/{patient_id}", headers={"Accept": "image/png"}).status_code == 406


def test_a_binary_is_sealed_under_its_patients_key(client: FhirTestClient, tmp_path: Path) -> None:
    patient_id = client.post(f"{BASE}/Patient", json={"resourceType": "Patient"}).json()["id"]
    secured = binary(client, f"Media/{media(client, patient_id)}")
    loose = binary(client, None)
    with sqlite3.connect(tmp_path / "var" / "tenants" / "default.sqlite") as conn:
        rows = dict(conn.execute("SELECT id, content FROM history WHERE type = 'Binary'").fetchall())
    assert f"Patient/{patient_id}".encode() in rows[secured["id"]][:80]  # shredded with the patient
    assert b"Patient/" not in rows[loose["id"]][:80]
    assert PNG not in rows[secured["id"]]


def test_a_patient_scope_reads_a_binary_as_its_security_context(idp: FhirTestClient) -> None:  # noqa: F811
    ids = {name: idp.post(f"{BASE}/Patient", json={"resourceType": "Patient"}).json()["id"] for name in ("a", "b")}
    own = binary(idp, f"Media/{media(idp, ids['a'])}")
    other = binary(idp, f"Media/{media(idp, ids['b'])}")
    loose = binary(idp, None)
    alice = idp.patient_token(ids["a"], "patient/Binary.rs patient/Media.rs")  # type: ignore[attr-defined]
    assert idp.get(f"{BASE}/Binary/{own['id']}", headers={**alice, "Accept": "image/png"}).content == PNG
    assert idp.get(f"{BASE}/Binary/{other['id']}", headers={**alice, "Accept": "image/png"}).status_code == 404
    assert idp.get(f"{BASE}/Binary/{loose['id']}", headers=alice).status_code == 404
    assert idp.get(f"{BASE}/Binary/{other['id']}/_history/1", headers=alice).status_code == 404
