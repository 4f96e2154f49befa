"""Orthanc's DICOMweb plugin linked to DermBridge's DICOMweb with a standing credential (issue 17: the link
broke when its 5-minute bearer token expired): an API key as the Basic password, and the client's own secret
once HTTP Basic is allowed for it. Orthanc queries DermBridge (QIDO-RS) and retrieves the study (WADO-RS)
into its own store, as a PACS team configures it, through a real ``dermbridge serve`` process."""

from __future__ import annotations

import json
from pathlib import Path

import httpx2
import pytest

from tests.dicom_factories import dermoscopic, stow_body
from tests.orthanc import running_orthanc
from tests.server import cli, create_client, running_server

pytestmark = pytest.mark.interop


def test_orthanc_queries_and_retrieves_from_dermbridge_with_a_key_and_with_basic(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    with running_server(data_dir, env={"DERMBRIDGE_AUTH_TOKEN_LIFETIME_SECONDS": "60"}) as server:
        image = dermoscopic(patient_id="LINK-1", seed=41)
        body, media = stow_body(image)
        stored = server.http.post(f"{server.root}/dicomweb/default/studies", content=body,
                                  headers={"Content-Type": media})  # fmt: skip
        assert stored.status_code == 200, stored.text
        pacs = create_client(data_dir, "default", "integration")
        key = cli("client", "key", "create", "--client-id", pacs["client_id"], "--name", "orthanc", "--scope",
                  "system/ImagingStudy.rs system/Patient.rs", "--data-dir", str(data_dir))  # fmt: skip
        assert key.returncode == 0, key.stderr
        api_key = json.loads(key.stdout)["api_key"]
        allowed = cli("client", "allow-basic", "--client-id", pacs["client_id"], "--data-dir", str(data_dir))
        assert allowed.returncode == 0, allowed.stderr
        url = f"{server.root}/dicomweb/default/"
        servers = {
            "by-key": {"Url": url, "Username": pacs["client_id"], "Password": api_key},
            "by-secret": {"Url": url, "Username": pacs["client_id"], "Password": pacs["client_secret"]},
            "wrong": {"Url": url, "Username": pacs["client_id"], "Password": "dbk_not-a-key"},
        }
        dicomweb = {"Enable": True, "Root": "/dicom-web/", "Servers": servers}
        with running_orthanc(tmp_path / "orthanc", DicomWeb=dicomweb) as orthanc:
            study = str(image.StudyInstanceUID)
            for name in ("by-key", "by-secret"):  # QIDO-RS from Orthanc's DICOMweb client
                found = orthanc.post(f"/dicom-web/servers/{name}/get", {"Uri": "/studies"})
                assert [s["0020000D"]["Value"][0] for s in found] == [study]
            refused = orthanc.http.post("/dicom-web/servers/wrong/get", content=json.dumps({"Uri": "/studies"}))
            assert refused.status_code != 200  # DermBridge's 401 makes Orthanc's call fail
            # WADO-RS: Orthanc pulls the study into its own store
            orthanc.post("/dicom-web/servers/by-key/retrieve", {"Resources": [{"Study": study}]})
            assert set(orthanc.sop_classes()) == {str(image.SOPInstanceUID)}
        revoked = cli("client", "disable", "--client-id", pacs["client_id"], "--data-dir", str(data_dir))
        assert revoked.returncode == 0, revoked.stderr
        after = httpx2.get(f"{url}studies", auth=(pacs["client_id"], api_key), timeout=30)
        assert after.status_code == 401  # revocation is immediate
