"""An image joins the record its identifier names, never another patient's study by its UIDs (pentest-2
finding 2): C-STORE of an instance whose PatientID names one patient and whose Study, Series or SOP
Instance UID belongs to another's is refused (PS3.4 B.2.3 A900 with an ErrorComment), audited, and an
identity-review Task is opened for the study's patient. Driven by pynetdicom as SCU."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from pynetdicom import AE
from pynetdicom.association import Association

from dicom_node import statuses
from tests.dicom_factories import dermoscopic
from tests.dicom_node.conftest import DicomNode

pytestmark = pytest.mark.interop
BASE = "/fhir/default"


@pytest.fixture
def association(node: DicomNode) -> Iterator[Association]:
    ae = AE(ae_title="PYNETDICOM")
    sample = dermoscopic()
    ae.add_requested_context(sample.SOPClassUID, sample.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="DERMBRIDGE")
    assert assoc.is_established
    yield assoc
    if assoc.is_established:
        assoc.release()


def patient_id(node: DicomNode, mrn: str) -> str | None:
    found = node.client.get(f"{BASE}/Patient", params={"identifier": f"urn:clinic:mrn|{mrn}"}).json()
    return found["entry"][0]["resource"]["id"] if found.get("entry") else None


def imaging_study(node: DicomNode, study_uid: str) -> dict[str, Any]:
    found = node.client.get(f"{BASE}/ImagingStudy", params={"identifier": f"urn:dicom:uid|urn:oid:{study_uid}"})
    entries = found.json()["entry"]
    assert len(entries) == 1
    resource: dict[str, Any] = entries[0]["resource"]
    return resource


def review_tasks(node: DicomNode, patient: str) -> list[dict[str, Any]]:
    found = node.client.get(f"{BASE}/Task", params={"code": "urn:dermbridge:task|patient-identity-review"}).json()
    tasks = [e["resource"] for e in found.get("entry", [])]
    return [t for t in tasks if t["for"]["reference"] == f"Patient/{patient}"]


def test_an_image_of_one_patient_cannot_join_another_patients_study(node: DicomNode, association: Association) -> None:
    bob = dermoscopic(patient_id="FS-B", patient_name="BRAVO^BOB", seed=1)
    alice = dermoscopic(patient_id="FS-A", patient_name="ALPHA^ALICE", seed=2)
    for ds in (bob, alice):
        assert association.send_c_store(ds).Status == statuses.SUCCESS
    bob_id = patient_id(node, "FS-B")
    assert bob_id is not None
    intruders = {
        "StudyInstanceUID": dermoscopic(patient_id="FS-A", patient_name="ALPHA^ALICE", study_uid=bob.StudyInstanceUID,
                                        series_uid=bob.SeriesInstanceUID, seed=3),
        "SeriesInstanceUID": dermoscopic(patient_id="FS-A", patient_name="ALPHA^ALICE",
                                         series_uid=bob.SeriesInstanceUID, seed=4),
        "SOPInstanceUID": dermoscopic(patient_id="FS-A", patient_name="ALPHA^ALICE", sop_uid=bob.SOPInstanceUID),
    }  # fmt: skip
    unknown = dermoscopic(patient_id="FS-NEW", patient_name="NEW^NOBODY", study_uid=bob.StudyInstanceUID, seed=5)
    for uid, ds in [*intruders.items(), ("StudyInstanceUID", unknown)]:
        status = association.send_c_store(ds)
        assert (status.Status, status.ErrorComment) == (
            statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS,
            f"{uid} belongs to another patient",
        )
    assert patient_id(node, "FS-NEW") is None  # a refused image creates no Patient
    study = imaging_study(node, bob.StudyInstanceUID)
    assert (study["subject"]["reference"], study["numberOfInstances"]) == (f"Patient/{bob_id}", 1)
    media = node.client.get(f"{BASE}/Media", params={"subject": f"Patient/{bob_id}"}).json()
    assert media["total"] == 1
    tasks = review_tasks(node, bob_id)
    assert tasks and all(t["status"] == "requested" for t in tasks)
    assert any("was refused" in t["description"] and bob.StudyInstanceUID in t["description"] for t in tasks)
    log = (node.data_dir / "audit" / "dicom.jsonl").read_text().splitlines()
    failures = [json.loads(line) for line in log if "belongs to another patient" in line]
    assert {f["outcome"] for f in failures} == {"failure"} and len(failures) == 4


def test_the_study_s_own_patient_and_an_image_without_patient_id_still_join_it(
    node: DicomNode, association: Association
) -> None:
    first = dermoscopic(patient_id="FS-C", patient_name="CHARLIE^CAROL", seed=1)
    same = dermoscopic(patient_id="FS-C", patient_name="CHARLIE^CAROL", study_uid=first.StudyInstanceUID, seed=2)
    anonymous = dermoscopic(study_uid=first.StudyInstanceUID, seed=3)
    anonymous.PatientID = ""
    for ds in (first, same, anonymous):
        assert association.send_c_store(ds).Status == statuses.SUCCESS
    carol = patient_id(node, "FS-C")
    study = imaging_study(node, first.StudyInstanceUID)
    assert (study["subject"]["reference"], study["numberOfInstances"]) == (f"Patient/{carol}", 3)
