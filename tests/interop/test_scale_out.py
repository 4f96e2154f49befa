"""Scale-out with real parts (issue 16, "Stateless roles"): HAProxy (Debian's) in front of two API processes,
one DICOM, one worker, one inference and one audit process, all on one database: the SQLite files of one data
directory, or one throw-away PostgreSQL (the blob directory shared by every process). A client writes and reads
FHIR through the load balancer while dcmtk's storescu sends images to the DICOM process; one API process is
killed (-9) mid-load. No acknowledged write is lost, the other API process carries the load on, every image is
analysed exactly once (no duplicate result Observations, one SR and one SEG), and the audit trail verifies."""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.conftest import ENGINES, engine_settings
from tests.fhir_server.test_consent import AI, consent
from tests.haproxy import haproxy
from tests.inference.test_worker import lesion_instance
from tests.server import Server, cli, crash, create_client, fetch_token, free_port, pending_events, running_server

pytestmark = pytest.mark.interop
MARKER = "urn:dermbridge:test:scale-out"
BOUND = 180.0
START_BOUND = 600.0  # a bound, not a race: six processes importing torch on two busy cores took over 120 s


class Writer(threading.Thread):
    """Creates Patients through the load balancer, each with a marker of its own; keeps what was acknowledged."""

    def __init__(self, base: str, token: str) -> None:
        super().__init__(daemon=True)
        self.base, self.token = base, token
        self.acknowledged: dict[str, str] = {}  # id -> marker
        self.unknown = 0
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx2.Client(headers={"Authorization": f"Bearer {self.token}"}, timeout=30) as http:
            while not self.stop.is_set():
                marker = str(uuid.uuid4())
                body = {"resourceType": "Patient", "identifier": [{"system": MARKER, "value": marker}]}
                try:
                    response = http.post(f"{self.base}/Patient", json=body)
                except httpx2.TransportError:
                    self.unknown += 1
                    continue
                if response.status_code == 201:
                    self.acknowledged[response.json()["id"]] = marker
                else:
                    self.unknown += 1

    def wait_for(self, count: int) -> None:
        deadline = time.monotonic() + BOUND
        while len(self.acknowledged) < count:
            assert self.is_alive() and time.monotonic() < deadline, f"{len(self.acknowledged)} of {count} writes"
            time.sleep(0.05)


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Every process on SQLite (one data directory), or on one database of the throw-away PostgreSQL."""
    return engine_settings(request)


def test_an_api_process_killed_behind_haproxy_loses_nothing(tmp_path: Path, engine: dict[str, Any]) -> None:
    data, dimse, lb_port = tmp_path / "var", free_port(), free_port()
    storage = engine.get("storage")
    on_engine = {"DERMBRIDGE_STORAGE": storage} if storage else {}
    common = {"DERMBRIDGE_AUDIT_LOADER": "role", "DERMBRIDGE_DICOM_PORT": str(dimse),
              "DERMBRIDGE_DICOM_ANY_AE_TENANT": "default", "DERMBRIDGE_PUBLIC_URL": f"http://127.0.0.1:{lb_port}",
              "DERMBRIDGE_INFERENCE_ENABLED": "true", **on_engine}  # fmt: skip
    admin = create_client(data, env=on_engine)
    with ExitStack() as stack:

        def start(role: str) -> Server:
            return stack.enter_context(running_server(data, START_BOUND, env=common, admin=False, role=role))

        apis = [start("api") for _ in range(2)]
        for role in ("dicom", "worker", "inference", "audit"):
            start(role)
        lb = stack.enter_context(haproxy(tmp_path, lb_port, [int(a.root.rsplit(":", 1)[1]) for a in apis])).url
        token = fetch_token(lb, admin)
        base = f"{lb}/fhir/default"
        http = stack.enter_context(httpx2.Client(headers={"Authorization": f"Bearer {token}"}, timeout=60))
        patients = [_consenting_patient(http, base, f"SCALE-{n}") for n in range(2)]

        writer = Writer(base, token)
        writer.start()
        writer.wait_for(30)
        _store(tmp_path, dimse, "SCALE-0", seed=31)
        crash(apis[0].process.pid)  # mid-load: the writer's requests keep coming through the balancer
        assert apis[0].process.wait(timeout=30) == -9
        before = len(writer.acknowledged)
        writer.wait_for(before + 60)  # the other API process carries on
        _store(tmp_path, dimse, "SCALE-1", seed=32)
        writer.stop.set()
        writer.join(timeout=60)

        for patient_id, marker in writer.acknowledged.items():  # no acknowledged write is lost
            found = http.get(f"{base}/Patient/{patient_id}")
            assert found.status_code == 200, (patient_id, found.text)
            assert found.json()["identifier"][0]["value"] == marker
        deadline = time.monotonic() + BOUND
        while pending_events(data, ("workflow", "inference"), storage=storage) or any(
            _findings(http, base, p) < 4 for p in patients
        ):
            assert time.monotonic() < deadline, "the images were not analysed"
            time.sleep(0.5)
        assert [_findings(http, base, p) for p in patients] == [4, 4]  # exactly once: risk x2, diagnosis, ABCD
        # and the results as DICOM once: for each of the two images, one SR and one SEG
        assert _modalities(http, lb) == ["DMS", "DMS", "SEG", "SEG", "SR", "SR"]
        if storage:  # every process was on PostgreSQL: no tenant database in the shared data directory
            assert not list(data.glob("tenants/*.sqlite"))
        cases = [http.get(f"{base}/DiagnosticReport", params={"subject": f"Patient/{p}", "_summary": "count"})
                 .json()["total"] for p in patients]  # fmt: skip
        assert cases == [1, 1]
        assert apis[1].process.poll() is None
    verified = cli("audit", "verify", "--tenant", "default", "--data-dir", str(data), env=on_engine)
    assert verified.returncode == 0 and "intact" in verified.stdout, verified.stdout + verified.stderr


def _consenting_patient(http: httpx2.Client, base: str, mrn: str) -> str:
    body = {"resourceType": "Patient", "identifier": [{"system": "urn:clinic:mrn", "value": mrn}]}
    patient_id = str(http.post(f"{base}/Patient", json=body).json()["id"])
    assert http.post(f"{base}/Consent", json=consent(patient_id, {"type": "permit", "purpose": [AI]})).is_success
    return patient_id


def _store(directory: Path, port: int, mrn: str, seed: int) -> None:
    path = directory / f"{mrn}.dcm"
    lesion_instance(mrn, seed=seed, accession=f"ACC-{mrn}").save_as(path, enforce_file_format=True)  # one order each
    sent = subprocess.run(["storescu", "-R", "-aec", "DERMBRIDGE", "127.0.0.1", str(port), str(path)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert sent.returncode == 0, sent.stderr


def _findings(http: httpx2.Client, base: str, patient_id: str) -> int:
    params = {"subject": f"Patient/{patient_id}", "_summary": "count"}
    return int(http.get(f"{base}/Observation", params=params).json()["total"])


def _modalities(http: httpx2.Client, root: str) -> list[str]:
    """The Modality of each instance the tenant holds (QIDO-RS over all instances), sorted."""
    found = http.get(f"{root}/dicomweb/default/instances", params={"includefield": "00080060"})
    assert found.status_code == 200, found.text
    return sorted(instance["00080060"]["Value"][0] for instance in found.json())
