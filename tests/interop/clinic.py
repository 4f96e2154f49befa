"""A clinic around a real ``dermbridge serve`` process (issue 14, "Tests and figures"), shared by the end to
end tests and ``bench/workflow_bench.py``: the server runs the DIMSE listener, the inference worker (the demo
model), the workflow engine and the Subscription worker in one process; a device sends images by C-STORE;
reviewers are registered clients acting for their ``Practitioner`` (``--fhir-user``) with a Dermatology
``PractitionerRole``; the EHR subscribes with a rest-hook endpoint and an email address.

Waits are on conditions with generous bounds, never fixed sleeps. ``settled`` reads the tenant's outbox
(the SQLite file, read only) to know that every consumer has handled every event: the condition for
"nothing more will arrive" before counting deliveries."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx2
import pydicom

from fhir_server.workflow.library import shipped
from tests.dicom_scu import c_store
from tests.fhir_server.test_consent import AI, consent
from tests.server import Server, cli, fetch_token, pending_events

T = TypeVar("T")
DEADLINE = 240.0  # seconds: a restart after kill -9 waits for the lapsed leases (30-60 s) of the dead process
CASE_TASK = "urn:dermbridge:workflow-step|case"
REVIEW = "urn:dermbridge:task|clinician-review"
SNOMED = "http://snomed.info/sct"
NAEVUS = {"coding": [{"system": SNOMED, "code": "400096001", "display": "Melanocytic nevus"}]}
DERMATOLOGY = {"coding": [{"system": SNOMED, "code": "394582007", "display": "Dermatology"}]}
# Fast Subscription retries (the endpoints here refuse on purpose), loopback endpoints allowed as an
# operator would, tokens that outlive a slow machine's restarts, any calling AE title to the default tenant.
SERVER_ENV = {
    "DERMBRIDGE_INFERENCE_ENABLED": "true",
    "DERMBRIDGE_DICOM_ANY_AE_TENANT": "default",
    "DERMBRIDGE_SUBSCRIPTION_ALLOWED_HOSTS": "127.0.0.1",
    "DERMBRIDGE_SUBSCRIPTION_RETRY_SECONDS": "0.2",
    "DERMBRIDGE_SUBSCRIPTION_POLL_SECONDS": "0.1",
    "DERMBRIDGE_SUBSCRIPTION_MAX_ATTEMPTS": "30",
    "DERMBRIDGE_AUTH_TOKEN_LIFETIME_SECONDS": "7200",
}


def until(probe: Callable[[], T | None], what: str, timeout: float = DEADLINE) -> T:
    """``probe()`` once it answers something other than None or False (polled, bounded)."""
    deadline = time.monotonic() + timeout
    while (found := probe()) is None or found is False:
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.05)
    return found


def parameters(*items: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": list(items)}


@dataclass
class Reviewer:
    """A clinician's client: its tokens carry ``fhirUser`` = the Practitioner."""

    practitioner: str
    http: httpx2.Client
    clinic: Clinic  # its base follows the server across restarts
    credentials: dict[str, str]

    @property
    def base(self) -> str:
        return self.clinic.base

    def sign_in(self) -> None:
        """A token from the server as it runs now (its issuer is its URL: a restart on another port)."""
        token = fetch_token(self.clinic.server.root, self.credentials)
        self.http.headers["Authorization"] = f"Bearer {token}"

    def op(self, task_id: str, name: str, *items: dict[str, Any]) -> httpx2.Response:
        return self.http.post(f"{self.base}/Task/{task_id}/${name}", json=parameters(*items))

    def must(self, task_id: str, name: str, *items: dict[str, Any]) -> dict[str, Any]:
        response = self.op(task_id, name, *items)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def lesions(self, task: dict[str, Any]) -> list[str]:
        """The lesions (BodyStructure references) of the Task's patient, as a reviewer's app reads them."""
        response = self.http.get(f"{self.base}/BodyStructure", params={"patient": task["for"]["reference"]})
        assert response.status_code == 200, response.text
        return [f"BodyStructure/{e['resource']['id']}" for e in response.json().get("entry", [])]

    def worklist(self, **params: str) -> list[dict[str, Any]]:
        response = self.http.get(f"{self.base}/Task/$worklist", params=params)
        assert response.status_code == 200, response.text
        return [e["resource"] for e in response.json().get("entry", [])]


@dataclass
class Clinic:
    server: Server
    data_dir: Path
    dimse_port: int

    @property
    def base(self) -> str:
        return self.server.base

    def get(self, path: str, **params: str) -> dict[str, Any]:
        response = self.server.http.get(f"{self.base}/{path}", params=params)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def found(self, path: str, **params: str) -> list[dict[str, Any]]:
        bundle = self.get(path, _count="200", **params)
        return [e["resource"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.server.http.post(f"{self.base}/{path}", json=body)
        assert response.status_code in (200, 201), response.text
        return dict(response.json())

    def settled(self) -> None:
        """Until every consumer (workflow engine, AI worker, Subscription worker) has handled every event."""
        until(lambda: pending_events(self.data_dir) == 0, "the outbox consumers settled")

    def consenting_patient(self, mrn: str) -> str:
        body = {"resourceType": "Patient", "identifier": [{"system": "urn:clinic:mrn", "value": mrn}]}
        patient_id = str(self.post("Patient", body)["id"])
        self.post("Consent", consent(patient_id, {"type": "permit", "purpose": [AI]}))
        return patient_id

    def storescu(self, path: Path) -> None:
        """dcmtk's storescu; exit 0 means C-STORE Success, i.e. the image is durable."""
        command = ["storescu", "-R", "-aet", "DERMATOSCOPE", "-aec", "DERMBRIDGE", "127.0.0.1", str(self.dimse_port)]
        sent = subprocess.run([*command, str(path)], capture_output=True, text=True, timeout=120)
        assert sent.returncode == 0, sent.stderr

    def store(self, ds: pydicom.Dataset) -> None:
        """C-STORE with pynetdicom as the SCU (the bench: many images, no process per image)."""
        c_store(self.dimse_port, ds)

    def activate(self, name: str) -> dict[str, Any]:
        """The tenant's own copy of a shipped definition, written as a draft, then ``$activate``."""
        body = shipped(name)
        body.pop("id")
        body["status"] = "draft"
        created = self.post("PlanDefinition", body)
        activated = self.post(f"PlanDefinition/{created['id']}/$activate", parameters())
        assert activated["status"] == "active", activated
        return activated

    def case(self, patient_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """The patient's case (``DiagnosticReport``) and its root workflow Task, once both exist."""
        report = until(lambda: next(iter(self.found("DiagnosticReport", subject=f"Patient/{patient_id}")), None),
                       f"the case of Patient/{patient_id}")  # fmt: skip
        focus = f"DiagnosticReport/{report['id']}"
        root = until(lambda: next(iter(self.found("Task", code=CASE_TASK, focus=focus)), None), f"{focus}'s root Task")
        return report, root

    def review(self, report_id: str, **params: str) -> dict[str, Any]:
        """The case's review Task, once it exists (and matches ``params``)."""
        focus = f"DiagnosticReport/{report_id}"
        return until(lambda: next(iter(self.found("Task", code=REVIEW, focus=focus, **params)), None),
                     f"{focus}'s review Task {params}")  # fmt: skip

    def reviewer(self, name: str) -> Reviewer:
        """A Practitioner with an active Dermatology PractitionerRole and a clinician-reviewer client of theirs."""
        practitioner = self.post("Practitioner", {"resourceType": "Practitioner", "name": [{"text": name}]})["id"]
        reference = f"Practitioner/{practitioner}"
        role = {"resourceType": "PractitionerRole", "active": True, "practitioner": {"reference": reference},
                "specialty": [DERMATOLOGY]}  # fmt: skip
        self.post("PractitionerRole", role)
        created = cli("client", "create", "--tenant", "default", "--role", "clinician-reviewer", "--name", name,
                      "--fhir-user", reference, "--data-dir", str(self.data_dir))  # fmt: skip
        assert created.returncode == 0, created.stderr
        reviewer = Reviewer(reference, httpx2.Client(timeout=60), self, json.loads(created.stdout))
        reviewer.sign_in()
        return reviewer


def override(lesion: str, diagnosis: dict[str, Any], urgency: str, conclusion: str = "") -> list[dict[str, Any]]:
    """``$complete`` parameters of an override: the reviewer's own diagnosis of one lesion."""
    finding = {"name": "finding", "part": [{"name": "lesion", "valueReference": {"reference": lesion}},
                                           {"name": "diagnosis", "valueCodeableConcept": diagnosis},
                                           {"name": "urgency", "valueCode": urgency}]}  # fmt: skip
    said = [{"name": "conclusion", "valueString": conclusion}] if conclusion else []
    return [{"name": "decision", "valueCode": "override"}, finding, *said]
