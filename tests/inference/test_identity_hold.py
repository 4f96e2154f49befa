"""Analysis held while an image's patient identity is under review (issue 13, patient matching): an
image whose demographics contradict the Patient its identifier matched is not analysed under that
Patient's Consent; the case says why; completing the identity review, or ``Patient/$merge``, releases
it and the findings appear. dcmtk's storescu sends the images; the worker runs in the background."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BASE, FhirTestClient, make_client
from tests.fhir_server.test_consent import AI, consent
from tests.inference.test_worker import DEADLINE, lesion_instance, send, wait_for

pytestmark = pytest.mark.interop
REVIEW = "urn:dermbridge:task|patient-identity-review"
HOLD = "urn:dermbridge:task|ai-analysis-hold"
RISK = "urn:dermbridge:ai-risk|probability-of-93655004"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[FhirTestClient]:
    with make_client(tmp_path / "var", inference_enabled=True, dicom_any_ae_tenant="default") as client:
        yield client


def ehr_patient(client: FhirTestClient, mrn: str, family: str, born: str, with_consent: bool = True) -> str:
    body = {"resourceType": "Patient", "identifier": [{"system": "urn:clinic:mrn", "value": mrn}],
            "name": [{"family": family, "given": ["Berta"]}], "birthDate": born, "gender": "female"}  # fmt: skip
    patient_id = str(client.post(f"{BASE}/Patient", json=body).json()["id"])
    if with_consent:
        permit = {"type": "permit", "purpose": [AI]}
        assert client.post(f"{BASE}/Consent", json=consent(patient_id, permit)).status_code == 201
    return patient_id


def held_image(client: FhirTestClient, tmp_path: Path, mrn: str, seed: int) -> tuple[str, dict[str, Any]]:
    """An image of "MUSTER^ANNA", born 1970-05-02, filed under an EHR Patient "Berta Mustermann" born
    1961: held. Returns the Patient and its identity review Task."""
    patient_id = ehr_patient(client, mrn, "Mustermann", "1961-11-30")
    send(client, tmp_path, lesion_instance(mrn, seed=seed, accession=f"ACC-{mrn}"))
    hold = wait_for(client, "Task", {"patient": f"Patient/{patient_id}", "code": HOLD})[0]
    review = wait_for(client, "Task", {"patient": f"Patient/{patient_id}", "code": REVIEW})[0]
    assert hold["status"] == "on-hold"
    assert hold["statusReason"]["text"].startswith("AI analysis held: the image's patient demographics differ")
    assert f"Task/{review['id']}" in hold["statusReason"]["text"]
    assert {"reference": f"Task/{review['id']}"} in [i.get("valueReference") for i in hold["input"]]
    report = wait_for(client, "DiagnosticReport", {"subject": f"Patient/{patient_id}"})[0]
    assert hold["focus"]["reference"] == f"DiagnosticReport/{report['id']}"  # the case says why
    # the worker settled the event with the hold: no findings, no unsuitable or failed outcome
    assert client.get(f"{BASE}/Observation", params={"subject": f"Patient/{patient_id}"}).json()["total"] == 0
    outcomes = {"patient": f"Patient/{patient_id}", "code": "urn:dermbridge:task|ai-analysis"}
    assert client.get(f"{BASE}/Task", params=outcomes).json()["total"] == 0
    audits = client.get(f"{BASE}/AuditEvent", params={"subtype": "ai-analysis", "_count": "50"}).json()
    assert any("AI analysis held" in e["resource"]["outcomeDesc"] for e in audits.get("entry", []))
    return patient_id, review


def test_a_completed_identity_review_releases_the_held_image(node: FhirTestClient, tmp_path: Path) -> None:
    patient_id, review = held_image(node, tmp_path, "IH-1", seed=31)
    confirmed = {**review, "status": "completed"}
    confirmed.pop("meta")
    assert node.put(f"{BASE}/Task/{review['id']}", json=confirmed).status_code == 200
    findings = wait_for(node, "Observation", {"subject": f"Patient/{patient_id}", "code": RISK})
    assert len(findings) == 1
    hold = node.get(f"{BASE}/Task", params={"patient": f"Patient/{patient_id}", "code": HOLD}).json()
    task = hold["entry"][0]["resource"]
    assert task["status"] == "completed" and task["statusReason"]["text"].startswith("Hold released")
    assert f"Task/{review['id']} was completed" in task["statusReason"]["text"]


def test_merging_the_records_releases_the_held_image(node: FhirTestClient, tmp_path: Path) -> None:
    flagged, review = held_image(node, tmp_path, "IH-2", seed=32)
    survivor = ehr_patient(node, "IH-2-TRUE", "Muster", "1970-05-02", with_consent=False)
    parameters = [{"name": "source-patient", "valueReference": {"reference": f"Patient/{flagged}"}},
                  {"name": "target-patient", "valueReference": {"reference": f"Patient/{survivor}"}}]  # fmt: skip
    merged = node.post(f"{BASE}/Patient/$merge", json={"resourceType": "Parameters", "parameter": parameters})
    assert merged.status_code == 200, merged.text
    # the merge settles the identity: the review is completed, the image analysed under the survivor
    findings = wait_for(node, "Observation", {"subject": f"Patient/{survivor}", "code": RISK})
    assert len(findings) == 1
    resolved = node.get(f"{BASE}/Task/{review['id']}").json()
    assert resolved["status"] == "completed" and "Patient/$merge" in resolved["note"][-1]["text"]


def test_a_rejected_review_keeps_the_image_held(node: FhirTestClient, tmp_path: Path) -> None:
    """A review closed without confirming the identity releases nothing; re-queuing the case
    ($analyze) holds the image again rather than analysing it."""
    patient_id, review = held_image(node, tmp_path, "IH-3", seed=33)
    rejected = {**review, "status": "rejected"}
    rejected.pop("meta")
    assert node.put(f"{BASE}/Task/{review['id']}", json=rejected).status_code == 200
    report = wait_for(node, "DiagnosticReport", {"subject": f"Patient/{patient_id}"})[0]
    assert node.post(f"{BASE}/DiagnosticReport/{report['id']}/$analyze").status_code == 200
    audits = {"subtype": "ai-analysis", "entity": f"Patient/{patient_id}"}
    deadline = time.monotonic() + DEADLINE
    while not any(", rejected); the image is analysed once" in e["outcomeDesc"]
                  for e in wait_for(node, "AuditEvent", audits)):  # fmt: skip
        assert time.monotonic() < deadline, "the re-queued image was not held again"
        time.sleep(0.1)
    assert node.get(f"{BASE}/Observation", params={"subject": f"Patient/{patient_id}"}).json()["total"] == 0
