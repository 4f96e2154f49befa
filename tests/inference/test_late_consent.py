"""A Consent that comes after the images: storescu sends an image of a patient without consent (no
analysis, a review Task), then the hospital's Consent arrives and the image is analysed with no
one asking; ``DiagnosticReport/$analyze`` re-queues a case by hand."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BASE, FhirTestClient, make_client
from tests.fhir_server.test_consent import AI, TREAT, ai_purposes, consent
from tests.inference.test_worker import DEADLINE, SALIENCY, lesion_instance, send, wait_for, worker

pytestmark = pytest.mark.interop


@pytest.fixture
def node(tmp_path: Path) -> Iterator[FhirTestClient]:
    with make_client(tmp_path / "var", inference_enabled=True, dicom_any_ae_tenant="default") as client:
        yield client


def ehr_patient(client: FhirTestClient, mrn: str) -> str:
    body = {"resourceType": "Patient", "identifier": [{"system": "urn:clinic:mrn", "value": mrn}]}
    return str(client.post(f"{BASE}/Patient", json=body).json()["id"])


def findings(client: FhirTestClient, patient_id: str) -> int:
    return int(client.get(f"{BASE}/Observation", params={"subject": f"Patient/{patient_id}"}).json()["total"])


def refused_case(client: FhirTestClient, tmp_path: Path, mrn: str, seed: int) -> tuple[str, dict[str, Any]]:
    """A patient and the case of an image the consent gate refused."""
    patient_id = ehr_patient(client, mrn)
    send(client, tmp_path, lesion_instance(mrn, seed=seed, accession=f"ACC-{mrn}"))
    task = wait_for(client, "Task", {"patient": f"Patient/{patient_id}", "status": "requested"})[0]
    assert "no AI analysis" in task["reasonCode"]["text"]
    assert findings(client, patient_id) == 0
    report = client.get(f"{BASE}/{task['focus']['reference']}").json()
    return patient_id, report


REVIEW = "urn:dermbridge:task|clinician-review"


def escalated_review(node: FhirTestClient, patient_id: str) -> dict[str, Any]:
    """The patient's open review Task once its reason is the workflow's escalation (bounded wait)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        review = wait_for(node, "Task", {"patient": f"Patient/{patient_id}", "code": REVIEW, "status": "requested"})[0]
        if review["reasonCode"]["text"].startswith("escalated"):
            return review
        assert time.monotonic() < deadline, review["reasonCode"]
        time.sleep(0.1)


def test_a_late_consent_gets_the_waiting_images_analysed(node: FhirTestClient, tmp_path: Path) -> None:
    patient_id, report = refused_case(node, tmp_path, "LATE-1", seed=21)
    assert report["status"] == "registered"
    hospital = consent(patient_id, {"type": "permit", "purpose": [TREAT]})  # a standard purpose, not ours
    created = node.post(f"{BASE}/Consent", json=hospital)
    assert created.status_code == 201
    wait_for(node, "Media", {"subject": f"Patient/{patient_id}", "modality": SALIENCY})  # both steps committed
    analysed = wait_for(node, "Observation", {"subject": f"Patient/{patient_id}"}, 3)
    count = len(analysed)
    case = wait_for(node, "DiagnosticReport", {"_id": report["id"], "status": "preliminary"})[0]
    # the reviewer reads what happened, and does not wait on an analysis that is done (derm review 1, finding 14)
    # the case's review stays open for a clinician, now for the findings (the workflow escalated them)
    review = escalated_review(node, patient_id)  # the workflow hears of the findings after their commit
    assert "statusReason" not in review or not review["statusReason"]["text"].startswith("AI analysis queued")
    notes = [n["text"] for n in review["note"]]
    assert any(n.startswith("AI analysis queued again: a Consent now permits it") for n in notes)
    assert {f"Observation/{o['id']}" for o in analysed} <= {r["reference"] for r in case["result"]}
    # the same Consent again (a new version) re-queues nothing new: the results are there already
    again = {**created.json(), "dateTime": "2025-02-01"}
    again.pop("meta")
    assert node.put(f"{BASE}/Consent/{again['id']}", json=again).status_code == 200
    node.portal.call(node.app.state.dispatcher.drain)  # type: ignore[attr-defined]
    node.portal.call(worker(node).drain)
    assert findings(node, patient_id) == count


def test_analyze_requeues_a_case(node: FhirTestClient, tmp_path: Path) -> None:
    assert ai_purposes(node, AI).status_code == 200  # this tenant first wants an explicit AI consent
    patient_id = ehr_patient(node, "LATE-2")
    node.post(f"{BASE}/Consent", json=consent(patient_id, {"type": "permit", "purpose": [TREAT]}))
    send(node, tmp_path, lesion_instance("LATE-2", seed=22, accession="ACC-LATE-2"))
    task = wait_for(node, "Task", {"patient": f"Patient/{patient_id}", "status": "requested"})[0]
    report_id = task["focus"]["reference"].removeprefix("DiagnosticReport/")
    still_refused = node.post(f"{BASE}/DiagnosticReport/{report_id}/$analyze")
    assert still_refused.status_code == 200
    issues = still_refused.json()["issue"]
    assert "1 image(s)" in issues[0]["diagnostics"] and issues[1]["severity"] == "warning"

    assert ai_purposes(node, reset=True).status_code == 200  # TREAT covers it again; no Consent changed
    queued = node.post(f"{BASE}/DiagnosticReport/{report_id}/$analyze")
    assert queued.status_code == 200 and len(queued.json()["issue"]) == 1
    wait_for(node, "Observation", {"subject": f"Patient/{patient_id}"}, 3)
    assert node.post(f"{BASE}/DiagnosticReport/unknown/$analyze").status_code == 404
    assert node.get(f"{BASE}/DiagnosticReport/{report_id}/$analyze").status_code == 405
    reader = {"Authorization": f"Bearer {node.token(scope='system/DiagnosticReport.rs')}"}
    assert node.post(f"{BASE}/DiagnosticReport/{report_id}/$analyze", headers=reader).status_code == 403
