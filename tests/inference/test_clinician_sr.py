"""The clinician's signed-off decision as a DICOM SR (issue 17): what a dermatologist or PACS user reading it
would conclude. A verified, final report by the reviewer; per lesion the clinician's diagnosis and their
decision on the AI result (an override says the clinician disagreed; beside a demonstration model it is the
clinician's own diagnosis, the AI's output never read as one); the AI SR it concerns referenced; stored in
the study as a new series, found by QIDO-RS and C-FIND, retrieved by WADO-RS, listed in the ImagingStudy."""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import Any

import highdicom as hd
import pydicom
import pytest
from pydicom.dataset import Dataset

from dicom_node.derived import encoded
from dicom_node.iod import check_ai_result
from dicom_node.sop_classes import COMPREHENSIVE_3D_SR
from fhir_server.repository import Repository
from fhir_server.workflow.review import open_review
from inference.clinician_export import _person_name
from inference.clinician_sr import (
    OVERRODE,
    OWN_DEMO,
    Instance,
    LesionDecision,
    SignOff,
    build_key_images,
    build_sign_off_report,
)
from inference.dicom_results import derived_uid
from tests.conftest import BASE, FhirTestClient
from tests.fhir_server.workflow.review_case import DERMATOLOGY, NAEVUS, Reviewer
from tests.inference.test_dicom_results import _c_find_modalities, _dcmdump, _qido, _value, _wado, node
from tests.inference.test_worker import DEADLINE, consenting_patient, dimse_port, lesion_instance, send, wait_for

pytestmark = pytest.mark.interop
__all__ = ["node"]
NAEVUS_CODE = hd.sr.CodedConcept("400096001", "SCT", "Melanocytic nevus")


def _read(sr: Dataset, tmp_path: Path) -> hd.sr.Comprehensive3DSR:
    path = tmp_path / f"{sr.SOPInstanceUID}.dcm"
    path.write_bytes(encoded(sr))
    return hd.sr.srread(path)


def _texts(sr: Dataset) -> list[str]:
    """Every TEXT value of the content tree, as a viewer lists them."""
    found = []
    for item in sr.get("ContentSequence") or []:
        if item.get("ValueType") == "TEXT":
            found.append(str(item.TextValue))
        found += _texts(item)
    return found


def _evaluations(report: hd.sr.Comprehensive3DSR) -> dict[str, str]:
    [group] = report.content.get_image_measurement_groups()
    return {q.name.value: q.value.value for q in group.get_qualitative_evaluations()}


def _decision(decision: hd.sr.CodedConcept, demonstration: bool, image: Dataset, ai_sr: str) -> SignOff:
    lesion = LesionDecision(
        lesion_key="17",
        label="Lesion at back (BodyStructure/17)",
        diagnosis=NAEVUS_CODE,
        decision=decision,
        demonstration=demonstration,
        ai_reports=(Instance(image.StudyInstanceUID, "1.2.3.4", COMPREHENSIVE_3D_SR, ai_sr),),
        images=(Instance(image.StudyInstanceUID, image.SeriesInstanceUID, image.SOPClassUID, image.SOPInstanceUID),),
    )
    return SignOff("case-1", "k1", "Lovelace^Ada", "default", "2026-11-30T22:00:00Z", "Benign naevus.", (lesion,))


def test_an_override_reads_as_the_clinicians_verified_disagreement(tmp_path: Path) -> None:
    image = lesion_instance("CSR-1", seed=5)
    ai_sr = pydicom.uid.generate_uid()
    sr = build_sign_off_report(image, _decision(OVERRODE, False, image, ai_sr), "test")
    check_ai_result(sr)
    assert (sr.VerificationFlag, sr.CompletionFlag, sr.PreliminaryFlag) == ("VERIFIED", "COMPLETE", "FINAL")
    assert str(sr.VerifyingObserverSequence[0].VerifyingObserverName) == "Lovelace^Ada"
    assert sr.PatientID == image.PatientID and sr.StudyInstanceUID == image.StudyInstanceUID
    report = _read(sr, tmp_path)
    evaluations = _evaluations(report)
    assert evaluations["439401001"] == "400096001" and evaluations["clinician-decision"] == "overrode-ai"
    [group] = report.content.get_image_measurement_groups()
    assert group.tracking_uid == derived_uid("lesion", "17")  # the AI SR's Tracking UID of the same lesion
    words = " ".join(_texts(sr))
    assert "disagreed" in words and ai_sr in words and "Lovelace Ada" in words
    evidence = {
        i.ReferencedSOPInstanceUID
        for s in sr.CurrentRequestedProcedureEvidenceSequence
        for r in s.ReferencedSeriesSequence
        for i in r.ReferencedSOPSequence
    }
    assert {ai_sr, image.SOPInstanceUID} <= evidence
    assert "Clinician review" in sr.SeriesDescription and "E:" not in _dcmdump(sr, tmp_path)


def test_the_key_images_are_marked_with_the_signed_off_report(tmp_path: Path) -> None:
    image = lesion_instance("CSR-3", seed=7)
    decided = _decision(OVERRODE, False, image, pydicom.uid.generate_uid())
    sr = build_sign_off_report(image, decided, "test")
    kos = build_key_images(image, decided, sr)
    assert kos is not None and kos.Modality == "KO" and kos.PatientID == image.PatientID
    check_ai_result(kos)
    assert kos.ConceptNameCodeSequence[0].CodeValue == "113000"  # Of Interest
    referenced = {
        str(i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
        for i in kos.ContentSequence
        if "ReferencedSOPSequence" in i
    }
    assert referenced == {image.SOPInstanceUID, sr.SOPInstanceUID}
    assert build_key_images(image, SignOff("c", "k", "A^B", "t", "", "", ()), sr) is None  # no images, no KOS
    assert "E:" not in _dcmdump(kos, tmp_path)


def test_beside_a_demonstration_model_the_diagnosis_is_the_clinicians_own(tmp_path: Path) -> None:
    image = lesion_instance("CSR-2", seed=6)
    sr = build_sign_off_report(image, _decision(OWN_DEMO, True, image, pydicom.uid.generate_uid()), "test")
    evaluations = _evaluations(_read(sr, tmp_path))
    assert evaluations["clinician-decision"] == "own-demo-ai" and evaluations["ai-output-use"] == "demonstration"
    words = " ".join(_texts(sr))
    assert "DEMONSTRATION" in words and "the diagnosis here is the clinician's own" in words
    assert "disagreed" not in words  # a demonstration output is no diagnosis to disagree with


def _sr_instances(node: FhirTestClient, study: str) -> list[dict[str, Any]]:
    return [i for i in _qido(node, f"studies/{study}/instances") if _value(i, "00080016") == COMPREHENSIVE_3D_SR]


def _until(probe: Any, what: str) -> Any:
    deadline = time.monotonic() + DEADLINE
    while not (found := probe()):
        assert time.monotonic() < deadline, f"no {what} after {DEADLINE} s"
        time.sleep(0.1)
    return found


def test_a_signed_off_review_reaches_the_pacs_as_a_verified_sr(node: FhirTestClient, tmp_path: Path) -> None:
    patient_id = consenting_patient(node, "CSR-E2E")
    image = lesion_instance("CSR-E2E", seed=21)
    send(node, tmp_path, image)
    study = str(image.StudyInstanceUID)
    [ai_sr] = _until(lambda: _sr_instances(node, study), "AI SR")
    report = wait_for(node, "DiagnosticReport", {"subject": f"Patient/{patient_id}", "status": "preliminary"})[0]
    lesion = next(
        o["focus"][0]["reference"]
        for o in wait_for(node, "Observation", {"subject": f"Patient/{patient_id}"})
        if "device" in o and o.get("focus")
    )
    app: Any = node.app
    store = node.portal.call(app.state.engine.tenant, "default")
    opened = partial(
        open_review,
        Repository.system(store, reason="test"),
        report_id=report["id"],
        patient_id=patient_id,
        tier="dermatologist",
        reason="review",
        urgency="routine",
        due=None,
    )
    task = str(node.portal.call(opened).resource["id"])
    practitioner = node.post(
        f"{BASE}/Practitioner",
        json={"resourceType": "Practitioner", "name": [{"family": "Lovelace", "given": ["Ada"]}]},
    )
    who = f"Practitioner/{practitioner.json()['id']}"
    role = {
        "resourceType": "PractitionerRole",
        "active": True,
        "practitioner": {"reference": who},
        "specialty": [DERMATOLOGY],
    }
    assert node.post(f"{BASE}/PractitionerRole", json=role).status_code == 201
    reviewer = Reviewer(node, who)
    assert reviewer.op(task, "claim").status_code == 200
    finding = [("lesion", {"reference": lesion}), ("diagnosis", NAEVUS)]
    done = reviewer.op(task, "complete", ("decision", "override"), ("finding", finding))
    assert done.status_code == 200, done.text

    signed = _until(
        lambda: [i for i in _sr_instances(node, study) if _value(i, "00080018") != _value(ai_sr, "00080018")],
        "signed-off SR",
    )
    [item] = signed
    sr = _wado(node, study, _value(item, "0020000E"), _value(item, "00080018"))
    assert (
        sr.VerificationFlag == "VERIFIED"
        and str(sr.VerifyingObserverSequence[0].VerifyingObserverName) == "Lovelace^Ada"
    )
    evaluations = _evaluations(_read(sr, tmp_path))
    assert evaluations["439401001"] == "400096001"  # the clinician's diagnosis
    assert evaluations["clinician-decision"] == "own-demo-ai"  # the demo model's output was no diagnosis
    assert "93655004" not in str(sr)  # no melanoma asserted anywhere: neither the AI's nor the clinician's
    words = " ".join(_texts(sr))
    assert _value(ai_sr, "00080018") in words and "DEMONSTRATION" in words
    modalities = _c_find_modalities(dimse_port(node), study)
    assert modalities.count("SR") == 2 and "KO" in modalities  # the AI's SR, the clinician's SR and key images
    imaging = node.get(f"{BASE}/ImagingStudy", params={"identifier": f"urn:dicom:uid|urn:oid:{study}"}).json()
    series = imaging["entry"][0]["resource"]["series"]
    assert any(s["uid"] == sr.SeriesInstanceUID and s["modality"]["code"] == "SR" for s in series)
    final = node.get(f"{BASE}/DiagnosticReport/{report['id']}").json()
    assert final["status"] == "final"
    assert {"reference": f"ImagingStudy/{imaging['entry'][0]['resource']['id']}"} in final["imagingStudy"]


def test_the_reviewers_name_is_a_valid_person_name() -> None:
    assert _person_name({"name": [{"family": "Lovelace", "given": ["Ada", "King"]}]}, "") == "Lovelace^Ada King"
    assert _person_name({"name": [{"text": "Dr Ada Lovelace"}]}, "") == "Dr Ada Lovelace^"  # one component, said so
    assert _person_name(None, "A^B") == "A B^"
