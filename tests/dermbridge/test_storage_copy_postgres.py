"""``dermbridge storage copy`` from SQLite files to PostgreSQL: the copied tenant is served by a server on
PostgreSQL, its audit trail (intake seqs and signed heads included) verifies there and keeps growing, and its
DICOM objects, copied from the file tree into the database (``--to-blobs postgresql``), are retrieved from there."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx2

from tests.dermbridge.test_storage_copy import dermbridge
from tests.dicom_factories import dermoscopic
from tests.dicom_scu import c_store
from tests.postgres import ThrowawayPostgres
from tests.server import create_client, fetch_token, free_port, running_server


def test_a_tenant_copied_to_postgresql_is_served_and_its_trail_verifies(
    tmp_path: Path, postgres_server: ThrowawayPostgres
) -> None:
    data, target, dimse = tmp_path / "var", postgres_server.create_database(), free_port()
    client = create_client(data)
    image = dermoscopic(patient_id="COPY-1")
    dicom = {"DERMBRIDGE_DICOM_PORT": str(dimse), "DERMBRIDGE_DICOM_ANY_AE_TENANT": "default"}
    with running_server(data, admin=False, env=dicom) as source:
        c_store(dimse, image)
        headers = {"Authorization": f"Bearer {fetch_token(source.root, client)}"}
        patient = {"resourceType": "Patient", "gender": "female", "name": [{"family": "Quist"}]}
        created = httpx2.post(f"{source.base}/Patient", json=patient, headers=headers).json()
        updated = httpx2.put(f"{source.base}/Patient/{created['id']}", headers=headers,
                             json={**created, "birthDate": "1961-04-02"}).json()  # fmt: skip

    assert dermbridge("storage", "migrate", "--data-dir", str(data), storage=target).returncode == 0
    copied = dermbridge("storage", "copy", "--to", target, "--to-blobs", "postgresql", "--data-dir", str(data))
    assert copied.returncode == 0, copied.stdout + copied.stderr
    assert "the audit trail verifies on arrival" in copied.stdout
    assert "tenant default: 1 DICOM objects copied" in copied.stdout
    shutil.rmtree(data / "blobs")  # the copy serves its objects from PostgreSQL alone

    served = {"DERMBRIDGE_STORAGE": target, "DERMBRIDGE_BLOBS": "postgresql"}
    with running_server(data, admin=False, env=served) as copy:
        headers = {"Authorization": f"Bearer {fetch_token(copy.root, client)}"}
        assert httpx2.get(f"{copy.base}/Patient/{created['id']}", headers=headers).json() == updated
        found = httpx2.get(f"{copy.base}/Patient", params={"family": "qui", "birthdate": "1961"}, headers=headers)
        assert [e["resource"]["id"] for e in found.json()["entry"]] == [created["id"]]
        trail = httpx2.get(f"{copy.base}/AuditEvent", params={"entity": f"Patient/{created['id']}"}, headers=headers)
        assert trail.json()["total"] >= 3  # the create and update copied, and the read on PostgreSQL just now
        again = httpx2.post(f"{copy.base}/Patient", json=patient, headers=headers)
        assert again.status_code == 201
        retrieved = copy.retrieve(image, headers)
        assert retrieved.status_code == 200, retrieved.text
        assert image.PixelData in retrieved.content  # opened with the patient's key, which the copy carried

    verified = dermbridge("audit", "verify", "--data-dir", str(data), storage=target)
    assert verified.returncode == 0 and "intact" in verified.stdout, verified.stdout + verified.stderr
