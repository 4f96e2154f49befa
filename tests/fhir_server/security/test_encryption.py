"""Encryption at rest and crypto-shredding erasure, checked on the raw files."""

from __future__ import annotations

import base64
import os
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fhir_server.crypto.master import AesMasterKey, HybridMasterKey, UnwrapError, load_master_keys
from tests.conftest import BASE, FhirTestClient, make_client
from tests.dicom_factories import dermoscopic, stow_body
from tests.raw_files import raw_bytes

NAME = "Zyxwvutsrqenbaum"  # a name that appears nowhere else
MRN = "MRN-ERASE-77123"


def test_resources_are_ciphertext_on_disk(client: FhirTestClient, tmp_path: Path) -> None:
    created = client.post(f"{BASE}/Patient", json={"resourceType": "Patient", "name": [{"family": NAME}]}).json()
    assert client.get(f"{BASE}/Patient/{created['id']}").json()["name"][0]["family"] == NAME
    database = tmp_path / "var" / "tenants" / "default.sqlite"
    with sqlite3.connect(database) as conn:
        stored = conn.execute("SELECT content FROM history WHERE type = 'Patient'").fetchone()[0]
    assert stored.startswith(b"DBX1") and NAME.encode() not in stored
    assert f"Patient/{created['id']}".encode() in stored[:80]  # the data key it names


def test_a_moved_ciphertext_does_not_open(client: FhirTestClient, tmp_path: Path) -> None:
    """The associated data binds a version to its place: copied onto another resource, it fails."""
    first = client.post(f"{BASE}/Basic", json={"resourceType": "Basic", "code": {"text": "one"}}).json()
    second = client.post(f"{BASE}/Basic", json={"resourceType": "Basic", "code": {"text": "two"}}).json()
    database = tmp_path / "var" / "tenants" / "default.sqlite"
    with sqlite3.connect(database) as conn:
        content = conn.execute("SELECT content FROM history WHERE id = ?", (first["id"],)).fetchone()[0]
        conn.execute("UPDATE history SET content = ? WHERE id = ?", (content, second["id"]))
    with pytest.raises(UnwrapError):
        client.get(f"{BASE}/Basic/{second['id']}")


def test_master_keys_wrap_and_refuse_strangers(tmp_path: Path) -> None:
    aes = AesMasterKey.of(os.urandom(32))
    hybrid = HybridMasterKey.of(os.urandom(96))
    for key in (aes, hybrid):
        wrapped = key.wrap(b"k" * 32, b"tenant-key|t|1")
        assert key.unwrap(wrapped, b"tenant-key|t|1") == b"k" * 32
        with pytest.raises(UnwrapError):
            key.unwrap(wrapped, b"tenant-key|other|1")
    with pytest.raises(UnwrapError):
        AesMasterKey.of(os.urandom(32)).unwrap(aes.wrap(b"x", b"a"), b"a")
    keys = load_master_keys(tmp_path / "keys", "hybrid")
    assert keys.current.key_id.startswith("hybrid-")
    env = base64.b64encode(os.urandom(32)).decode()
    assert load_master_keys(tmp_path / "keys", "aes", env).current.key_id.startswith("aes-")


def dicom_cli(*args: str) -> subprocess.CompletedProcess[str]:
    import sys

    return subprocess.run([sys.executable, "-m", "dermbridge", *args], capture_output=True, text=True, timeout=120)


def test_key_rotation_keeps_data_readable(tmp_path: Path) -> None:
    data = tmp_path / "var"
    with make_client(data) as client:
        created = client.post(f"{BASE}/Patient", json={"resourceType": "Patient", "name": [{"family": NAME}]})
        patient_id = created.json()["id"]
    rotated = dicom_cli("keys", "rotate-master", "--kind", "hybrid", "--data-dir", str(data))
    assert rotated.returncode == 0, rotated.stderr
    tenant = dicom_cli("keys", "rotate-tenant", "--tenant", "default", "--data-dir", str(data))
    assert tenant.returncode == 0, tenant.stderr
    old_masters = sorted((data / "keys").glob("master-aes-*.key"))
    for path in old_masters:  # the old master key can go once everything is re-wrapped
        path.unlink()
    with make_client(data) as client:
        assert client.get(f"{BASE}/Patient/{patient_id}").json()["name"][0]["family"] == NAME
        client.post(f"{BASE}/Observation", json=observation(patient_id))
        assert client.get(f"{BASE}/Observation", params={"subject": f"Patient/{patient_id}"}).json()["total"] == 1


def observation(patient_id: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "code": {"text": f"note about {NAME}"},
            "subject": {"reference": f"Patient/{patient_id}"}, "valueString": f"{NAME} lesion"}  # fmt: skip


def test_erase_shreds_the_patient(tmp_path: Path) -> None:
    data = tmp_path / "var"
    settings = {"dicom_any_ae_tenant": "default"}
    with make_client(data, **settings) as client:
        ds = dermoscopic(patient_id=MRN, patient_name=f"{NAME}^ANNA", seed=3)
        noise = np.random.default_rng(5).integers(0, 256, (ds.Rows, ds.Columns, 3), dtype=np.uint8)
        ds.PixelData = noise.tobytes()
        signature = noise.tobytes()[1000:1048]  # pixel bytes found in no other file
        body, media = stow_body(ds)
        stored = client.post("/dicomweb/default/studies", content=body, headers={"Content-Type": media})
        assert stored.status_code == 200
        patient = client.get(f"{BASE}/Patient", params={"identifier": f"urn:clinic:mrn|{MRN}"}).json()
        patient_id = patient["entry"][0]["resource"]["id"]
        obs = client.post(f"{BASE}/Observation", json=observation(patient_id)).json()
        client.put(f"{BASE}/Observation/{obs['id']}", json={**observation(patient_id), "id": obs["id"],
                                                          "status": "amended"})  # fmt: skip
        other = client.post(f"{BASE}/Patient", json={"resourceType": "Patient", "name": [{"family": "Keepme"}]})
        before = raw_bytes(data)
        assert MRN.encode() in before and NAME.encode() in before  # the index and DICOM attributes hold them

        erased = client.post(f"{BASE}/Patient/{patient_id}/$erase")
        assert erased.status_code == 200, erased.text
        again = client.post(f"{BASE}/Patient/{patient_id}/$erase")
        assert again.status_code == 200 and "already erased" in again.json()["issue"][0]["diagnostics"]

        assert client.get(f"{BASE}/Patient/{patient_id}").status_code == 410
        assert client.get(f"{BASE}/Observation/{obs['id']}").status_code == 410
        assert client.get(f"{BASE}/Observation/{obs['id']}/_history/1").status_code == 410
        assert client.get(f"{BASE}/Patient", params={"identifier": f"urn:clinic:mrn|{MRN}"}).json()["total"] == 0
        assert client.get(f"{BASE}/Observation", params={"subject": f"Patient/{patient_id}"}).json()["total"] == 0
        assert client.get("/dicomweb/default/studies", params={"PatientID": MRN}).status_code == 204
        assert client.get(f"{BASE}/Patient/{other.json()['id']}").status_code == 200
        refused = client.post(f"{BASE}/Observation", json=observation(patient_id))
        assert refused.status_code == 410  # no new data under an erased patient
        audit = client.get(f"{BASE}/AuditEvent", params={"entity": f"Patient/{patient_id}"}).json()
        assert audit["total"] >= 1  # the trail keeps its references, and verifies

    after = raw_bytes(data)
    for secret in (NAME.encode(), NAME.upper().encode(), MRN.encode(), signature):
        assert secret not in after, secret
    verified = dicom_cli("audit", "verify", "--tenant", "default", "--data-dir", str(data))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    # what is left of the patient is ciphertext under a key that no longer exists anywhere
    with sqlite3.connect(data / "tenants" / "default.sqlite") as conn:
        sealed = conn.execute(
            "SELECT content FROM history WHERE id = ? AND content IS NOT NULL", (obs["id"],)
        ).fetchall()
        keys = conn.execute("SELECT key FROM record WHERE collection = 'crypto.data-key'").fetchall()
    assert sealed and all(row[0].startswith(b"DBX1") for row in sealed)
    assert f"Patient/{patient_id}" not in {row[0] for row in keys}


def test_erase_needs_delete_rights(client: FhirTestClient) -> None:
    patient_id = client.post(f"{BASE}/Patient", json={"resourceType": "Patient"}).json()["id"]
    reader = {"Authorization": f"Bearer {client.token(scope='system/Patient.rs')}"}
    assert client.post(f"{BASE}/Patient/{patient_id}/$erase", headers=reader).status_code == 403
    assert client.post(f"{BASE}/Patient/unknown/$erase").status_code == 404
    assert client.get(f"{BASE}/Patient/{patient_id}/$erase").status_code == 405
