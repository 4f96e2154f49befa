"""The inference worker as its own process (``dermbridge serve --role inference``) beside an API
process (``--role api``) on the same data directory: real processes, real sockets, dcmtk."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fhir_server.test_consent import AI, consent
from tests.inference.test_worker import lesion_instance
from tests.server import free_port, running_server


def _interruptible() -> None:
    """In the child before exec: SIGINT back to its default (a shell's background job ignores it, and an
    ignored signal stays ignored across exec), so Ctrl-C semantics are what the test checks."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


pytestmark = pytest.mark.interop


def test_worker_process_beside_an_api_process(tmp_path: Path) -> None:
    data, dimse = tmp_path / "var", free_port()
    env = {"DERMBRIDGE_ROLE": "api", "DERMBRIDGE_INFERENCE_ENABLED": "true", "DERMBRIDGE_DICOM_PORT": str(dimse),
           "DERMBRIDGE_DICOM_ANY_AE_TENANT": "default"}  # fmt: skip
    with running_server(data, env=env) as api:
        http = api.http
        body = {"resourceType": "Patient", "identifier": [{"system": "urn:clinic:mrn", "value": "ROLE-1"}]}
        patient_id = http.post(f"{api.base}/Patient", json=body).json()["id"]
        assert http.post(
            f"{api.base}/Consent", json=consent(patient_id, {"type": "permit", "purpose": [AI]})
        ).is_success
        worker = subprocess.Popen(
            [sys.executable, "-m", "dermbridge", "serve", "--role", "inference", "--data-dir", str(data)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "DERMBRIDGE_INFERENCE_ENABLED": "true"},
            preexec_fn=_interruptible,  # a suite started in the background (`cmd &`) passes SIGINT on ignored
        )  # fmt: skip
        try:
            path = tmp_path / "lesion.dcm"
            lesion_instance("ROLE-1", seed=31).save_as(path, enforce_file_format=True)
            sent = subprocess.run(["storescu", "-R", "-aec", "DERMBRIDGE", "127.0.0.1", str(dimse), str(path)],
                                  capture_output=True, text=True, timeout=60)  # fmt: skip
            assert sent.returncode == 0, sent.stderr
            params = {"subject": f"Patient/{patient_id}", "_summary": "count"}
            time.sleep(2)  # the API process itself analyses nothing
            deadline = time.monotonic() + 90
            while (
                total := http.get(f"{api.base}/Observation", params=params).json()["total"]
            ) < 4:  # two risk results, a diagnosis, ABCD
                assert worker.poll() is None, worker.stdout.read() if worker.stdout else ""
                assert time.monotonic() < deadline, "the worker process wrote no Observations"
                time.sleep(0.2)
            assert total == 4
        finally:
            worker.send_signal(signal.SIGINT)
            try:
                output, _ = worker.communicate(timeout=60)
            except subprocess.TimeoutExpired:  # a stall: every thread's stack (faulthandler), then kill it
                worker.send_signal(signal.SIGUSR1)
                time.sleep(1)
                worker.kill()
                output, _ = worker.communicate()
                pytest.fail(f"the inference worker did not stop within 60 s of SIGINT:\n{output[-20000:]}")
        assert worker.returncode == 0, output
        assert "inference worker" in output
