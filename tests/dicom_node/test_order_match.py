"""An image joins the case its AccessionNumber names only when the case is its own patient's
(``dicom_node.order_match``), driven by dcmtk's storescu."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.dicom_factories import dermoscopic, write
from tests.dicom_node.conftest import DicomNode, wait_for

pytestmark = pytest.mark.interop
BASE = "/fhir/default"
REVIEW = "urn:dermbridge:task|patient-identity-review"
MISMATCH = "urn:dermbridge:audit|accession-patient-mismatch"


def patient_of(node: DicomNode, mrn: str) -> str:
    found = node.client.get(f"{BASE}/Patient", params={"identifier": f"urn:clinic:mrn|{mrn}"}).json()
    assert found["total"] == 1
    return str(found["entry"][0]["resource"]["id"])


def cases_of(node: DicomNode, patient: str) -> list[dict[str, Any]]:
    found = node.client.get(f"{BASE}/DiagnosticReport", params={"subject": f"Patient/{patient}"}).json()
    return [e["resource"] for e in found.get("entry", [])]


def assert_mismatch_recorded(node: DicomNode, image_patient: str, order_patient: str, order_case: str) -> None:
    """An identity review Task about the image's patient naming the order's case and patient, and an AuditEvent
    naming both patients."""
    tasks = node.client.get(f"{BASE}/Task", params={"code": REVIEW, "patient": f"Patient/{image_patient}"}).json()
    assert tasks["total"] == 1
    task = tasks["entry"][0]["resource"]
    assert task["status"] == "requested" and task["for"]["reference"] == f"Patient/{image_patient}"
    references = {i["valueReference"]["reference"] for i in task["input"] if "valueReference" in i}
    assert references == {f"DiagnosticReport/{order_case}", f"Patient/{order_patient}"}

    def audited() -> list[dict[str, Any]]:
        bundle = node.client.get(f"{BASE}/AuditEvent", params={"subtype": MISMATCH}).json()
        return [e["resource"] for e in bundle.get("entry", [])]

    assert wait_for(lambda: len(audited()) == 1)
    event = audited()[0]
    named = {e["what"]["reference"] for e in event["entity"]}
    assert {f"Patient/{image_patient}", f"Patient/{order_patient}", f"DiagnosticReport/{order_case}",
            f"Task/{task['id']}"} <= named  # fmt: skip
    assert event["outcome"] == "4"


def test_two_patients_with_one_accession_keep_their_own_cases(node: DicomNode, tmp_path: Path) -> None:
    """Two patients' studies arrive with the same AccessionNumber: neither image enters the other's case."""
    first = write(dermoscopic(patient_id="ORD-A", patient_name="ALPHA^ANNA", accession="ORDER-9", seed=1), tmp_path)
    node.run("storescu", str(first), check=True)
    second = write(dermoscopic(patient_id="ORD-B", patient_name="BETA^BERT", accession="ORDER-9", seed=2), tmp_path)
    node.run("storescu", str(second), check=True)
    a, b = patient_of(node, "ORD-A"), patient_of(node, "ORD-B")
    (case_a,), (case_b,) = cases_of(node, a), cases_of(node, b)
    assert case_a["id"] != case_b["id"]
    assert len(case_a["media"]) == len(case_b["media"]) == 1
    for case, patient in ((case_a, a), (case_b, b)):
        media = node.client.get(f"{BASE}/{case['media'][0]['link']['reference']}").json()
        assert media["subject"]["reference"] == f"Patient/{patient}"
    accession = {"system": "urn:dermbridge:accession", "value": "ORDER-9"}
    assert accession in case_a["identifier"] and accession not in case_b["identifier"]  # the order stays A's
    assert_mismatch_recorded(node, b, a, case_a["id"])


def test_an_image_of_another_patient_never_enters_the_ehr_s_case(node: DicomNode, tmp_path: Path) -> None:
    """The EHR opened a case for patient A; an image of patient B arrives with A's accession."""
    client = node.client
    ehr_patient = {"resourceType": "Patient", "identifier": [{"system": "urn:clinic:mrn", "value": "ORD-EHR-A"}]}
    a = client.post(f"{BASE}/Patient", json=ehr_patient).json()["id"]
    case = {"resourceType": "DiagnosticReport", "status": "registered", "code": {"text": "Dermoscopy review"},
            "identifier": [{"system": "urn:dermbridge:accession", "value": "ORDER-77"}],
            "subject": {"reference": f"Patient/{a}"}}  # fmt: skip
    opened = client.post(f"{BASE}/DiagnosticReport", json=case).json()
    node.run("storescu", str(write(dermoscopic(patient_id="ORD-EHR-B", accession="ORDER-77"), tmp_path)), check=True)
    assert "media" not in client.get(f"{BASE}/DiagnosticReport/{opened['id']}").json()
    b = patient_of(node, "ORD-EHR-B")
    (own,) = cases_of(node, b)
    assert own["id"] != opened["id"] and len(own["media"]) == 1
    assert_mismatch_recorded(node, b, a, opened["id"])


def test_a_case_of_a_record_merged_into_the_image_s_patient_is_joined(node: DicomNode, tmp_path: Path) -> None:
    """The order names a record that ``Patient/$merge`` retired into the image's Patient: the same person."""
    client = node.client
    retired, survivor = (client.post(f"{BASE}/Patient", json={"resourceType": "Patient", "identifier": [
        {"system": "urn:clinic:mrn", "value": mrn}]}).json()["id"] for mrn in ("ORD-OLD", "ORD-NEW"))  # fmt: skip
    merged = client.post(f"{BASE}/Patient/$merge", json={"resourceType": "Parameters", "parameter": [
        {"name": "source-patient", "valueReference": {"reference": f"Patient/{retired}"}},
        {"name": "target-patient", "valueReference": {"reference": f"Patient/{survivor}"}}]})  # fmt: skip
    assert merged.status_code == 200, merged.text
    case = {"resourceType": "DiagnosticReport", "status": "registered", "code": {"text": "Dermoscopy review"},
            "identifier": [{"system": "urn:dermbridge:accession", "value": "ORDER-M"}],
            "subject": {"reference": f"Patient/{retired}"}}  # fmt: skip
    opened = client.post(f"{BASE}/DiagnosticReport", json=case)
    assert opened.status_code == 201, opened.text
    node.run("storescu", str(write(dermoscopic(patient_id="ORD-NEW", accession="ORDER-M"), tmp_path)), check=True)
    assert len(client.get(f"{BASE}/DiagnosticReport/{opened.json()['id']}").json()["media"]) == 1
    assert client.get(f"{BASE}/Task", params={"code": REVIEW}).json()["total"] == 0
