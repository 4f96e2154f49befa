"""Every part of the server in a process of its own (``dermbridge serve --role api|dicom|worker|inference|
audit``) on one data directory: real processes, real sockets, dcmtk's storescu. An image sent to the DICOM
process is analysed by the inference process, its case run by the worker process, and read through the API
process; the API leaves its AuditEvents to the audit process (``DERMBRIDGE_AUDIT_LOADER=role``); each
process answers /readyz with its own parts, and the audit trail verifies at the end."""

from __future__ import annotations

import subprocess
import time
from contextlib import ExitStack
from pathlib import Path

import httpx2
import pytest

from tests.fhir_server.test_consent import AI, consent
from tests.inference.test_worker import lesion_instance
from tests.server import Server, cli, free_port, running_server

pytestmark = pytest.mark.interop

PARTS = {"dicom": {"dimse"}, "worker": {"consumers", "subscriptions"}, "inference": {"inference"},
         "audit": {"audit-loader"}}  # fmt: skip


def _ready(server: Server) -> dict[str, str]:
    response = httpx2.get(f"{server.root}/readyz", timeout=30)
    assert response.status_code == 200, response.text
    checks: dict[str, str] = response.json()["checks"]
    return checks


def _staged(server: Server) -> float:
    for line in httpx2.get(f"{server.root}/metrics", timeout=30).text.splitlines():
        if line.startswith("dermbridge_audit_staged_events "):
            return float(line.split()[1])
    raise AssertionError("no dermbridge_audit_staged_events in /metrics")


def test_one_process_per_role_on_one_database(tmp_path: Path) -> None:
    data, dimse = tmp_path / "var", free_port()
    common = {"DERMBRIDGE_AUDIT_LOADER": "role", "DERMBRIDGE_DICOM_PORT": str(dimse),
              "DERMBRIDGE_DICOM_ANY_AE_TENANT": "default"}  # fmt: skip
    with ExitStack() as stack:
        api = stack.enter_context(running_server(data, env=common, role="api"))
        roles = {role: stack.enter_context(running_server(data, env={**common, "DERMBRIDGE_INFERENCE_ENABLED": "true"},
                                                          admin=False, role=role))
                 for role in ("dicom", "worker", "inference", "audit")}  # fmt: skip
        assert set(_ready(api)) == {"database", "migrations", "blobs"}  # the API runs no background part
        for role, server in roles.items():
            assert set(_ready(server)) == {"database", "migrations", "blobs"} | PARTS[role], role
            assert httpx2.get(f"{server.root}/fhir/default/metadata").status_code == 404, role  # no API there

        http = api.http
        body = {"resourceType": "Patient", "identifier": [{"system": "urn:clinic:mrn", "value": "ROLE-1"}]}
        patient_id = http.post(f"{api.base}/Patient", json=body).json()["id"]
        permit = consent(patient_id, {"type": "permit", "purpose": [AI]})
        assert http.post(f"{api.base}/Consent", json=permit).is_success
        path = tmp_path / "lesion.dcm"
        lesion_instance("ROLE-1", seed=31).save_as(path, enforce_file_format=True)
        sent = subprocess.run(["storescu", "-R", "-aec", "DERMBRIDGE", "127.0.0.1", str(dimse), str(path)],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        params = {"subject": f"Patient/{patient_id}", "_summary": "count"}
        deadline = time.monotonic() + 120
        while (total := http.get(f"{api.base}/Observation", params=params).json()["total"]) < 4:
            assert time.monotonic() < deadline, "no process wrote the AI's Observations"  # risk x2, diagnosis, ABCD
            time.sleep(0.2)
        assert total == 4
        case = http.get(f"{api.base}/DiagnosticReport", params={"subject": f"Patient/{patient_id}"}).json()
        assert case["total"] == 1  # opened at ingest by the DICOM process, its workflow run by the worker
        deadline = time.monotonic() + 60  # staged by every process, loaded by the audit process alone
        while (lag := _staged(api)) > 0:
            assert time.monotonic() < deadline, f"{lag} AuditEvents are still staged: the audit process loads none"
            time.sleep(0.2)
        stored = http.get(f"{api.base}/AuditEvent", params={"entity": f"Patient/{patient_id}", "_summary": "count"})
        assert stored.json()["total"] >= 1
    for role, server in roles.items():
        assert server.process.returncode == 0, f"{role}:\n{server.output[-5000:]}"
    assert "inference worker on" in roles["inference"].output
    verified = cli("audit", "verify", "--tenant", "default", "--data-dir", str(data))
    assert verified.returncode == 0 and "intact" in verified.stdout, verified.stdout + verified.stderr
