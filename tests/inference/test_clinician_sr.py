"""The clinician's signed-off decision as a DICOM SR (issue 17): what a dermatologist or PACS user reading it
would conclude. A verified, final report by the reviewer; per lesion the clinician's diagnosis and their
decision on the AI result (an override says the clinician disagreed; beside a demonstration model it is the
clinician's own diagnosis, the AI's output never read as one); the AI SR it concerns referenced; stored in
the study as a new series, found by QIDO-RS and C-FIND, retrieved by WADO-RS, listed in the ImagingStudy."""

from __future__ import annotations

import dataclasses
import time
from functools import partial
from pathlib import Path
from typing import Any

import highdicom as hd
import pydicom
import pytest
from pydicom.dataset import Dataset

from dicom_node.derived import encoded
from dicom_node.dicom_values import REPRESENTATION, human_name
from dicom_node.iod import check_ai_result
from dicom_node.sop_classes import COMPREHENSIVE_3D_SR, KEY_OBJECT_SELECTION
from fhir_server.repository import Repository
from fhir_server.workflow.review import open_review
from inference.clinician_export import (
    Signer,
    SignOffExport,
    _decided,
    _in_study,
    _person_name,
    _signed_at,
    _signer,
    _urgency,
)
from inference.clinician_sr import (
    CONFIRMED,
    NO_AI,
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
from tests.inference.test_dicom_results import DICOMWEB, _c_find_modalities, _dcmdump, _qido, _value, _wado, node
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
    return SignOff("case-1", "k1", "Lovelace^Ada", "Skin Clinic", "2026-11-30T22:00:00Z", "Benign naevus.", (lesion,))


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
    assert "disagreed" in words and ai_sr in words and "Signed off by Ada Lovelace" in words
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
    assert evaluations["clinician-decision"] == "own-demo-ai"
    # derm review 4, M3: "not a diagnosis" never sits in the clinician's own findings group, only beside the AI SR
    assert "ai-output-use" not in evaluations and "demonstration" not in evaluations.values()
    words = " ".join(_texts(sr))
    assert "DEMONSTRATION" in words and "The diagnoses in this report are the clinician's own" in words
    assert "disagreed" not in words and "confirmed" not in words  # no diagnosis to disagree with or confirm


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

    # derm review 4, H2: an amendment is a new version that supersedes the first, and says so
    amended = {**final, "status": "amended", "conclusion": "Amended after a second look: melanocytic naevus."}
    assert node.put(f"{BASE}/DiagnosticReport/{report['id']}", json=amended).status_code == 200
    known = {_value(ai_sr, "00080018"), sr.SOPInstanceUID}
    [item] = _until(lambda: [i for i in _sr_instances(node, study) if _value(i, "00080018") not in known], "amended SR")
    second = _wado(node, study, _value(item, "0020000E"), _value(item, "00080018"))
    assert second.SeriesInstanceUID == sr.SeriesInstanceUID and (sr.InstanceNumber, second.InstanceNumber) == (1, 2)
    [predecessor] = second.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence
    assert predecessor.ReferencedSOPInstanceUID == sr.SOPInstanceUID
    words = [t for t in _texts(second) if t.startswith(("AMENDED", "Signed off"))]  # the report's text, in order
    assert words[0].startswith("AMENDED") and sr.SOPInstanceUID in words[0] and "(verified, amended)" in words[1]
    # only the current key-image note: the one of the superseded report is retired
    _until(lambda: len(_key_images(node, study)) == 1, "the superseded KOS retired")

    # derm review 4, M7: the key image is DELETEd over DICOMweb; the signed decision is re-issued, saying so
    instance = f"{DICOMWEB}/studies/{study}/series/{image.SeriesInstanceUID}/instances/{image.SOPInstanceUID}"
    assert node.delete(instance).status_code == 204
    known.add(second.SOPInstanceUID)
    [item] = _until(lambda: [i for i in _sr_instances(node, study) if _value(i, "00080018") not in known], "re-issue")
    third = _wado(node, study, _value(item, "0020000E"), _value(item, "00080018"))
    assert third.InstanceNumber == 3 and third.VerificationFlag == "VERIFIED"
    # derm review 5, M3: the server's re-issue never reads as the clinician's amendment
    head = next(t for t in _texts(third) if t.startswith(("RE-ISSUED", "AMENDED")))
    assert head.startswith("RE-ISSUED by DermBridge on") and "not by the clinician" in head, head
    assert f"image {image.SOPInstanceUID}" in head and second.SOPInstanceUID in head
    predecessors = {
        str(i.ReferencedSOPInstanceUID)
        for s in third.PredecessorDocumentsSequence[0].ReferencedSeriesSequence
        for i in s.ReferencedSOPSequence
    }
    assert predecessors == {sr.SOPInstanceUID, second.SOPInstanceUID}
    lesion_text = next(t for t in _texts(third) if t.startswith("Lesion at") and ": diagnosis" in t)
    assert f"image {image.SOPInstanceUID}" in lesion_text and "deleted" in lesion_text
    evidence = {
        str(i.ReferencedSOPInstanceUID)
        for s in third.CurrentRequestedProcedureEvidenceSequence
        for r in s.ReferencedSeriesSequence
        for i in r.ReferencedSOPSequence
    }
    assert image.SOPInstanceUID not in evidence  # no reference left to the deleted image
    _until(lambda: not _key_images(node, study), "the stale KOS retired")  # its only key image is gone
    assert "E:" not in _dcmdump(third, tmp_path)


def _key_images(node: FhirTestClient, study: str) -> list[dict[str, Any]]:
    return [i for i in _qido(node, f"studies/{study}/instances") if _value(i, "00080016") == KEY_OBJECT_SELECTION]


def test_the_reviewers_name_is_a_valid_person_name() -> None:
    assert _person_name({"name": [{"family": "Lovelace", "given": ["Ada", "King"]}]}, "") == "Lovelace^Ada^King"
    assert _person_name({"name": [{"text": "Dr Ada Lovelace"}]}, "") == "Dr Ada Lovelace^"  # one component, said so
    assert _person_name(None, "A^B") == "A B^"


def test_an_equivocal_result_is_never_signed_as_a_diagnosis() -> None:
    """Derm review 4, H1: a verified SR never says "Diagnosis = Equivocal"."""
    image = lesion_instance("CSR-EQ", seed=8)
    decided = _decision(CONFIRMED, False, image, pydicom.uid.generate_uid())
    equivocal = hd.sr.CodedConcept("42425007", "SCT", "Equivocal")
    lesion = dataclasses.replace(decided.lesions[0], diagnosis=equivocal)
    with pytest.raises(ValueError, match="Equivocal"):
        build_sign_off_report(image, dataclasses.replace(decided, lesions=(lesion,)), "test")


MELANOMA_AI = {"system": "http://snomed.info/sct", "code": "93655004", "display": "Malignant melanoma of skin"}
NAEVUS_AI = {"system": "http://snomed.info/sct", "code": "400096001", "display": "Melanocytic nevus"}
EQUIVOCAL_AI = {"system": "http://snomed.info/sct", "code": "42425007", "display": "Equivocal"}


def _ai(id_: str, value: dict[str, Any] | None, demo: bool = False) -> dict[str, Any]:
    code = "439401001" if value else "risk"
    found: dict[str, Any] = {"id": id_, "device": {"reference": "Device/1"}, "code": {"coding": [{"code": code}]}}
    if value:
        found["valueCodeableConcept"] = {"coding": [value]}
    if demo:
        found["meta"] = {"tag": [{"system": "urn:dermbridge:ai-use", "code": "demonstration"}]}
    return found


def _clinician(*derived: str) -> dict[str, Any]:
    return {"derivedFrom": [{"reference": f"Observation/{d}/_history/1"} for d in derived]}


MELANOMA_SR = hd.sr.CodedConcept("93655004", "SCT", "Malignant melanoma of skin")
MELANOMA_GENERAL = hd.sr.CodedConcept("372244006", "SCT", "Malignant melanoma")
SEB_K = hd.sr.CodedConcept("403835007", "SCT", "Seborrheic keratosis")
SCC_AI = {"system": "http://snomed.info/sct", "code": "402815007", "display": "Squamous cell carcinoma"}


@pytest.mark.parametrize(
    ("observation", "diagnosis", "ai", "expected"),
    [
        (_clinician(), NAEVUS_CODE, [_ai("r", None)], "own-ai-no-call"),  # risk results only: no call, no dispute
        (_clinician(), MELANOMA_SR, [_ai("e", EQUIVOCAL_AI)], "own-ai-equivocal"),  # resolving is not disagreeing
        (_clinician(), NAEVUS_CODE, [_ai("m", MELANOMA_AI)], "overrode-ai"),  # a positive call, differing
        (
            _clinician(),
            NAEVUS_CODE,
            [_ai("m", MELANOMA_AI), _ai("n", NAEVUS_AI)],
            "own-ai-mixed",
        ),  # melanoma not hidden
        (_clinician("m"), MELANOMA_SR, [_ai("m", MELANOMA_AI)], "confirmed-ai"),
        (_clinician("d"), NAEVUS_CODE, [_ai("d", NAEVUS_AI, demo=True)], "own-demo-ai"),  # M2: demo first
        (_clinician("r"), NAEVUS_CODE, [_ai("r", None), _ai("n", NAEVUS_AI)], "own-same-as-ai"),  # copy of a risk
        (_clinician("m"), NAEVUS_CODE, [_ai("m", MELANOMA_AI)], "overrode-ai"),  # derived, but a different value
        (_clinician(), NAEVUS_CODE, [], "no-ai-result"),
        # derm review 5, M5: melanoma at another granularity is agreement, not "overrode: disagreed"
        (_clinician(), MELANOMA_GENERAL, [_ai("m", MELANOMA_AI)], "own-consistent-with-ai"),
        (_clinician(), MELANOMA_GENERAL, [_ai("m", MELANOMA_AI), _ai("s", SCC_AI)], "overrode-ai"),  # not SCC
        (_clinician(), SEB_K, [_ai("n", NAEVUS_AI)], "overrode-ai"),  # two "other" diagnoses still differ
    ],
)
def test_the_decision_says_what_the_ai_called(
    observation: dict[str, Any], diagnosis: hd.sr.CodedConcept, ai: list[dict[str, Any]], expected: str
) -> None:
    """Derm review 4, M1/M2: "confirmed" only for a copy of the AI's one positive call, "disagreed" only with a
    positive call; otherwise neutral words (no call, equivocal, differing AI results, demonstration)."""
    assert _decided(observation, diagnosis, ai).value == expected


def test_an_amendment_supersedes_the_earlier_sign_off(tmp_path: Path) -> None:
    """Derm review 4, H2: Predecessor Documents, Instance Number per version, AMENDED at the head of the text."""
    image = lesion_instance("CSR-AM", seed=9)
    first = _decision(OVERRODE, False, image, pydicom.uid.generate_uid())
    original = build_sign_off_report(image, first, "test")
    earlier = Instance(
        image.StudyInstanceUID, original.SeriesInstanceUID, original.SOPClassUID, original.SOPInstanceUID
    )
    amended = dataclasses.replace(first, content_key="k2", status="amended", previous=(earlier,), version=2)
    sr = build_sign_off_report(image, amended, "test")
    assert sr.SeriesInstanceUID == original.SeriesInstanceUID and sr.SOPInstanceUID != original.SOPInstanceUID
    assert (original.InstanceNumber, sr.InstanceNumber) == (1, 2) and "PredecessorDocumentsSequence" not in original
    [referenced] = sr.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence
    assert referenced.ReferencedSOPInstanceUID == original.SOPInstanceUID
    words = [t for t in _texts(sr) if t.startswith(("AMENDED", "Signed off"))]  # the report's text, in order
    assert words[0].startswith("AMENDED") and original.SOPInstanceUID in words[0] and "(verified, amended)" in words[1]
    assert "E:" not in _dcmdump(sr, tmp_path)


def test_the_verification_time_is_when_the_clinician_signed() -> None:
    """Derm review 4, M5: not the export's time; with its UTC offset, in the study's zone when it has one."""
    image = lesion_instance("CSR-TZ", seed=10)
    decided = _decision(OVERRODE, False, image, pydicom.uid.generate_uid())  # signed 2026-11-30T22:00:00Z
    sr = build_sign_off_report(image, decided, "test")
    assert sr.VerifyingObserverSequence[0].VerificationDateTime == "20261130220000+0000"
    assert (sr.ContentDate, sr.ContentTime) == ("20261130", "220000")
    image.TimezoneOffsetFromUTC = "+0900"  # the study's local time: Tokyo
    sr = build_sign_off_report(image, decided, "test")
    assert sr.VerifyingObserverSequence[0].VerificationDateTime == "20261201070000+0900"
    assert (sr.ContentDate, sr.ContentTime, sr.TimezoneOffsetFromUTC) == ("20261201", "070000", "+0900")


def _signed(sr: Dataset) -> str:
    return next(t for t in _texts(sr) if t.startswith("Signed off by"))


def test_the_signed_off_line_reads_given_name_first() -> None:
    """Final review dicom.md 6 / derm review 4, L3: "Smith^Ann" read "Signed off by Smith Ann" (Smith as a given
    name); the PN is built from FHIR's parts, the official name first, with middle name, prefix and suffix."""
    image = lesion_instance("CSR-PN", seed=11)
    decided = dataclasses.replace(_decision(OVERRODE, False, image, "1.2.3"), reviewer="Smith^Ann")
    assert _signed(build_sign_off_report(image, decided, "test")).startswith(
        "Signed off by Ann Smith of Skin Clinic on 2026-11-30"
    )
    names = [
        {"use": "old", "family": "Jones"},
        {"use": "official", "family": "Smith", "given": ["Ann", "Mary"], "prefix": ["Dr"], "suffix": ["FRCP"]},
    ]
    pn = _person_name({"name": names}, "")
    assert pn == "Smith^Ann^Mary^Dr^FRCP"
    decided = dataclasses.replace(decided, reviewer=pn, organization="St John's Dermatology")
    sr = build_sign_off_report(image, decided, "test")
    assert _signed(sr).startswith("Signed off by Dr Ann Mary Smith FRCP of St John's Dermatology on")
    assert sr.VerifyingObserverSequence[0].VerifyingOrganization == "St John's Dermatology"


@pytest.mark.parametrize("signed_at", ["", "not-a-date", "2026-11-30T22:00:00"])
def test_a_signing_time_not_recorded_is_never_replaced_by_the_export_time(signed_at: str) -> None:
    """Final review dicom.md 6: an unreadable or zone-less signing time left highdicom's "now" as the verification
    time while the text said "on not-a-date"; the export is refused, and the exporter records why."""
    image = lesion_instance("CSR-NT", seed=12)
    decided = dataclasses.replace(_decision(OVERRODE, False, image, "1.2.3"), signed_at=signed_at)
    with pytest.raises(ValueError, match="signing time"):
        build_sign_off_report(image, decided, "test")


def test_the_clinicians_whole_text_reaches_the_pacs(tmp_path: Path) -> None:
    """Final review dicom.md 4: a TEXT item is UT (PS3.5 6.2), so the conclusion and the note are not cut at 1024
    (or 500) characters; a dermatologist reads "... unless histology shows ..." to its end."""
    image = lesion_instance("CSR-TX", seed=13)
    decided = _decision(OVERRODE, False, image, "1.2.3")
    conclusion = "Benign naevus. " * 100 + "Excise unless histology shows regression."
    note = "Dermoscopy: regular network. " * 70 + "Review in 3 months."
    lesion = dataclasses.replace(decided.lesions[0], note=note)
    sr = build_sign_off_report(image, dataclasses.replace(decided, conclusion=conclusion, lesions=(lesion,)), "t")
    texts = _texts(_read(sr, tmp_path))
    assert conclusion in texts and any(t.endswith(f"Note: {note}") for t in texts)
    assert "E:" not in _dcmdump(sr, tmp_path)


def test_every_lesion_of_the_signed_report_is_in_each_studys_sr(tmp_path: Path) -> None:
    """Derm review 4, M4: lesion B (melanoma, no image on record) was in no SR while study S1's SR, holding only
    lesion A, said COMPLETE. Every decided lesion is in it, B saying it has no image here."""
    image = lesion_instance("CSR-M4", seed=14)
    imaged = _decision(OVERRODE, False, image, "1.2.3")
    elsewhere = Instance("1.2.9", "1.2.9.1", image.SOPClassUID, "1.2.9.1.1")
    melanoma = LesionDecision("18", "Lesion at scalp (BodyStructure/18)", MELANOMA_SR, NO_AI)
    other = LesionDecision("19", "Lesion at arm (BodyStructure/19)", NAEVUS_CODE, NO_AI, images=(elsewhere,))
    decided = dataclasses.replace(imaged, lesions=(*imaged.lesions, melanoma, other))
    sr = build_sign_off_report(image, _in_study(decided, str(image.StudyInstanceUID)), "test")
    groups = _read(sr, tmp_path).content.get_image_measurement_groups()
    assert {g.tracking_identifier for g in groups} == {lesion.label for lesion in decided.lesions}
    assert sr.CompletionFlag == "COMPLETE"
    words = " ".join(_texts(sr))
    assert "Lesion at scalp (BodyStructure/18): diagnosis Malignant melanoma" in words
    assert "no image of this lesion on record" in words and "not imaged in this study" in words
    kos = build_key_images(image, _in_study(decided, str(image.StudyInstanceUID)), sr)
    assert kos is not None and elsewhere.sop_instance not in str(kos)  # key images of this study only


def test_an_sr_that_leaves_out_part_of_the_signed_report_is_partial_and_says_what(tmp_path: Path) -> None:
    """Derm review 4, M4: a clinician's finding that is not a coded diagnosis cannot be a group of this SR; the
    SR is then PARTIAL (PS3.3 C.17.2) and its text names what is left out, never a silent COMPLETE."""
    image = lesion_instance("CSR-PA", seed=15)
    left = ("the clinician's probability of melanoma (Observation/7): no coded diagnosis", "see DiagnosticReport/1")
    decided = dataclasses.replace(_decision(OVERRODE, False, image, "1.2.3"), left_out=left)
    sr = build_sign_off_report(image, decided, "test")
    assert (sr.CompletionFlag, sr.VerificationFlag) == ("PARTIAL", "VERIFIED")
    assert next(t for t in _texts(sr) if "PARTIAL" in t).startswith(
        "PARTIAL: this SR leaves out the clinician's probability of melanoma"
    )
    assert "E:" not in _dcmdump(sr, tmp_path)


def test_a_malformed_urgency_is_read_as_written_not_retried_until_dead_lettered() -> None:
    """Final review dicom.md 11: ``valueString`` or an empty coding raised KeyError/IndexError, retried by the
    outbox until dead-lettered with nothing recorded."""
    code = {"coding": [{"system": "urn:dermbridge:review-finding", "code": "referral-urgency"}]}
    assert _urgency({"component": [{"code": code, "valueString": "within 2 weeks"}]}) == "within 2 weeks"
    assert _urgency({"component": [{"code": code, "valueCodeableConcept": {"coding": [], "text": "soon"}}]}) == "soon"
    assert _urgency({"component": [{"code": code, "valueCodeableConcept": {"coding": [{"code": "urgent"}]}}]}) == (
        "urgent"
    )
    assert _urgency({"component": [{"code": code}]}) == "" and _urgency({}) == ""


def _created(client: FhirTestClient, resource: dict[str, Any]) -> str:
    response = client.post(f"{BASE}/{resource['resourceType']}", json=resource)
    assert response.status_code == 201, response.text
    return f"{resource['resourceType']}/{response.json()['id']}"


def test_a_report_signed_via_a_practitioner_role_names_the_person_and_their_organisation(
    client: FhirTestClient,
) -> None:
    """Derm review 4, M6 and L1 / final review dicom.md 5: a report signed by a PractitionerRole was never
    exported, and the verifier's organisation was the tenant's id ("default"). The role resolves to its
    practitioner and its Organization's name; a signer who names nobody is recorded as not exported."""
    organization = _created(client, {"resourceType": "Organization", "name": "St John's Dermatology"})
    who = _created(client, {"resourceType": "Practitioner", "name": [{"family": "Smith", "given": ["Ann"]}]})
    role = _created(
        client,
        {"resourceType": "PractitionerRole", "practitioner": {"reference": who},
         "organization": {"reference": organization}},
    )  # fmt: skip
    app: Any = client.app
    store = client.portal.call(app.state.engine.tenant, "default")  # type: ignore[union-attr]
    repo = Repository.system(store, reason="test")
    for reference in (role, who):  # by the role, or by the practitioner whose role names the organisation
        report = {"id": "r1", "resultsInterpreter": [{"reference": reference}]}
        signer = client.portal.call(_signer, repo, report)  # type: ignore[union-attr]
        assert signer == Signer(reference, "Smith^Ann", "St John's Dermatology")
    # no ``issued``: the signing time is the signer's Provenance of the report, never the last write's time
    provenance = {"resourceType": "Provenance", "target": [{"reference": "DiagnosticReport/r1"}],
                  "recorded": "2026-11-30T21:00:00+01:00", "agent": [{"who": {"reference": role}}]}  # fmt: skip
    _created(client, provenance)
    by_role = Signer(role, "Smith^Ann", "")
    assert client.portal.call(_signed_at, repo, {"id": "r1"}, by_role) == "2026-11-30T21:00:00+01:00"  # type: ignore[union-attr]
    assert client.portal.call(_signed_at, repo, {"id": "r2"}, by_role) == ""  # type: ignore[union-attr]

    nobody = _created(client, {"resourceType": "PractitionerRole", "active": True})
    signed = {
        "resourceType": "DiagnosticReport",
        "status": "final",
        "code": {"text": "Skin lesion review"},
        "issued": "2026-11-30T22:00:00Z",
        "resultsInterpreter": [{"reference": nobody}],
    }
    report_id = _created(client, signed).split("/")[1]
    events = wait_for(client, "AuditEvent", {"subtype": "sign-off-dicom"})
    [failed] = [e for e in events if f"DiagnosticReport/{report_id} not exported" in e.get("outcomeDesc", "")]
    assert failed["outcome"] == "8" and f"{nobody} names no practitioner" in failed["outcomeDesc"]


IDE, ABC, SYL = ({"url": REPRESENTATION, "valueCode": code} for code in ("IDE", "ABC", "SYL"))
JP_CORE = {  # a JP Core Practitioner: the kanji name official, romaji usual, kana its reading
    "name": [
        {"use": "usual", "family": "Yamada", "given": ["Taro"], "extension": [ABC]},
        {"use": "official", "family": "山田", "given": ["太郎"], "extension": [IDE]},
        {"family": "ヤマダ", "given": ["タロウ"], "extension": [SYL]},
    ]
}


def test_a_name_outside_latin_1_reaches_the_pacs_as_written(tmp_path: Path) -> None:
    """Derm review 5, H1: a Japanese clinician was verified as "??^??" and their conclusion lost, "Dvořák Łukasz"
    became "Dvo?ák^?ukasz": the SR took the image's ISO_IR 100 and the PN was encoded to Latin-1. The SR and KOS
    are UTF-8; the kanji name is the ideographic group, its kana the phonetic (the inverse of ``human_name``), and
    "Signed off by" reads the kanji name family name first."""
    pn = _person_name(JP_CORE, "")
    assert pn == "Yamada^Taro=山田^太郎=ヤマダ^タロウ"
    without_extension = [{"use": "official", "family": "山田", "given": ["太郎"]}, {"use": "usual", "text": "Taro"}]
    assert _person_name({"name": without_extension}, "") == "Taro^=山田^太郎"  # kanji read as the ideographic form
    assert [n["family"] for n in human_name(pn)] == ["Yamada", "山田", "ヤマダ"]  # and back, the same groups
    assert human_name(pn)[1]["use"] == "official"
    image = lesion_instance("CSR-JP", seed=16)
    image.SpecificCharacterSet, image.PatientName = "ISO_IR 100", "Müller^Jürgen"  # a dermatoscope's default
    czech = _person_name({"name": [{"family": "Dvořák", "given": ["Łukasz"]}]}, "")
    for reviewer, organization, conclusion in (
        (pn, "東京皮膚科", "良性母斑。"),
        (czech, "Nemocnice Na Františku", "Nevus, bez známek malignity."),
    ):
        decided = dataclasses.replace(
            _decision(OVERRODE, False, image, "1.2.3"),
            reviewer=reviewer,
            organization=organization,
            conclusion=conclusion,
        )
        sr = build_sign_off_report(image, decided, "test")
        kos = build_key_images(image, decided, sr)
        assert kos is not None
        for made in (sr, kos):
            path = tmp_path / f"{made.SOPInstanceUID}.dcm"
            path.write_bytes(encoded(made))
            raw = path.read_bytes()
            assert reviewer.encode() in raw and "Müller^Jürgen".encode() in raw  # byte-exact, UTF-8
            back = pydicom.dcmread(path)
            assert back.SpecificCharacterSet == "ISO_IR 192" and str(back.PatientName) == "Müller^Jürgen"
            assert "E:" not in _dcmdump(made, tmp_path) and "?" not in str(back.PatientName)
        back = _read(sr, tmp_path)
        assert str(back.VerifyingObserverSequence[0].VerifyingObserverName) == reviewer
        assert back.VerifyingObserverSequence[0].VerifyingOrganization == organization
        texts = _texts(back)
        assert conclusion in texts and "?" not in " ".join(t for t in texts if "Signed off" in t)
    assert _signed(build_sign_off_report(image, dataclasses.replace(decided, reviewer=pn), "t")).startswith(
        "Signed off by 山田 太郎 (Taro Yamada) of Nemocnice"
    )
    assert _signed(sr).startswith("Signed off by Łukasz Dvořák of Nemocnice Na Františku on")


def _system_write(client: FhirTestClient, repo: Repository, resource: dict[str, Any]) -> str:
    """A resource written as the server's own components write them (the AI worker's results, say)."""
    stored = client.portal.call(  # type: ignore[union-attr]
        partial(repo.create, resource, resource_type=resource["resourceType"], server_built=True)
    )
    return f"{resource['resourceType']}/{stored.resource['id']}"


def _finding(focus: str, value: dict[str, Any] | None, device: bool, status: str = "final") -> dict[str, Any]:
    finding: dict[str, Any] = {
        "resourceType": "Observation",
        "status": status,
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "439401001", "display": "Diagnosis"}]},
        "subject": {"reference": "Patient/p1"},
        "focus": [{"reference": focus}],
    }
    if value is not None:
        finding["valueCodeableConcept"] = {"coding": [value]}
    if device:
        finding["device"] = {"reference": "Device/1"}
    return finding


def _signed_off(client: FhirTestClient, *findings: dict[str, Any]) -> tuple[list[LesionDecision], list[str], Any]:
    """The exporter's reading of a report listing ``findings`` (written first, in order)."""
    app: Any = client.app
    store = client.portal.call(app.state.engine.tenant, "default")  # type: ignore[union-attr]
    repo = Repository.system(store, reason="test")
    results = [{"reference": _system_write(client, repo, f)} for f in findings]
    report = {"id": "signed-1", "status": "final", "result": results}
    export = SignOffExport(app.state.engine, app.state.ingestor.blobs, None)
    return client.portal.call(export._decisions, store, repo, report)  # type: ignore[union-attr]


def _lesions(client: FhirTestClient, *sites: str) -> list[str]:
    app: Any = client.app
    repo = Repository.system(client.portal.call(app.state.engine.tenant, "default"), reason="test")  # type: ignore[union-attr]
    body = {"resourceType": "BodyStructure", "patient": {"reference": "Patient/p1"}}
    return [_system_write(client, repo, {**body, "location": {"text": site}}) for site in sites]


def test_a_lesion_the_ai_called_and_the_clinician_did_not_decide_on_is_named_and_the_sr_partial(
    client: FhirTestClient, tmp_path: Path
) -> None:
    """Derm review 5, H2: the clinician decided on lesion A only; lesion B's melanoma call was silently absent from
    a COMPLETE, verified SR. B is named ("no clinician decision recorded") and the SR is PARTIAL, saying why."""
    back, arm = _lesions(client, "back", "arm")
    decided, left_out, undecided = _signed_off(
        client, _finding(back, NAEVUS_AI, device=True), _finding(arm, MELANOMA_AI, device=True),
        _finding(back, NAEVUS_AI, device=False),
    )  # fmt: skip
    assert [d.label for d in decided] == [f"Lesion at back ({back})"]
    [words] = undecided
    assert words.startswith(f"Lesion at arm ({arm}): no clinician decision recorded; the AI called Malignant melanoma")
    assert any(f"Lesion at arm ({arm})" in what for what in left_out)
    image = lesion_instance("CSR-H2", seed=17)
    sign_off = dataclasses.replace(
        _decision(OVERRODE, False, image, "1.2.3"), left_out=tuple(left_out), undecided=undecided
    )
    sr = build_sign_off_report(image, sign_off, "test")
    assert (sr.CompletionFlag, sr.VerificationFlag) == ("PARTIAL", "VERIFIED")
    texts = _texts(_read(sr, tmp_path))
    partial_words = next(t for t in texts if t.startswith("PARTIAL"))
    assert words in texts and f"Lesion at arm ({arm}) (an AI call no clinician decided on)" in partial_words


def test_a_lesion_with_no_ai_call_and_no_decision_is_named_in_a_complete_sr(client: FhirTestClient) -> None:
    """Derm review 5, H2 (confirm): lesion B has risk results only, no call; the clinician's confirmation covered A.
    B is named as undecided with "the AI made no call"; nothing called is left out, so the SR stays COMPLETE."""
    back, arm = _lesions(client, "back", "arm")
    risk_only = {**_finding(arm, None, device=True), "code": {"text": "risk", "coding": [{"code": "risk"}]}}
    decided, left_out, undecided = _signed_off(
        client, _finding(back, NAEVUS_AI, device=True), risk_only, _finding(back, NAEVUS_AI, device=False)
    )
    assert len(decided) == 1 and left_out == []
    assert undecided == (f"Lesion at arm ({arm}): no clinician decision recorded; the AI made no call.",)


def test_a_withdrawn_or_contradictory_finding_is_never_a_verified_diagnosis(client: FhirTestClient) -> None:
    """Derm review 5, M1: the finding the clinician withdrew (entered-in-error) and its replacement were both
    exported as "Diagnosis" under VERIFIED; two current findings that differ on one lesion too. The withdrawn one is
    named, not exported; a contradictory lesion has no diagnosis and the SR is PARTIAL saying the record is
    contradictory (a refused export would leave the PACS without any sign of the signed-off case)."""
    back, arm, leg = _lesions(client, "back", "arm", "leg")
    decided, left_out, said = _signed_off(
        client,
        _finding(back, MELANOMA_AI, device=False, status="entered-in-error"),
        _finding(back, NAEVUS_AI, device=False, status="corrected"),
        _finding(leg, MELANOMA_AI, device=True, status="entered-in-error"),  # a withdrawn AI call: nothing to decide
        _finding(arm, MELANOMA_AI, device=False),
        _finding(arm, NAEVUS_AI, device=False),
    )
    assert [(d.label, d.diagnosis.value, d.decision.value) for d in decided] == [
        (f"Lesion at back ({back})", "400096001", "no-ai-result")
    ]
    [withdrawn] = said
    assert "(Malignant melanoma of skin, SNOMED CT 93655004) is entered-in-error" in withdrawn
    assert left_out[0].startswith(f"Lesion at arm ({arm}): the record is contradictory")
    assert "93655004" in left_out[0] and "400096001" in left_out[0]
    assert not any(leg in what for what in left_out)


def test_a_re_issue_after_a_deletion_says_dermbridge_made_it_not_the_clinician(tmp_path: Path) -> None:
    """Derm review 5, M3: after a DICOMweb DELETE the re-issued SR read "AMENDED (version 2)" above the clinician's
    verification, as if they had amended it. It says DermBridge re-issued it, why, and that the findings stand."""
    image = lesion_instance("CSR-RI", seed=18)
    first = _decision(OVERRODE, False, image, "1.2.3")
    earlier = build_sign_off_report(image, first, "test")
    gone = "image 1.2.9.9: Media deleted over DICOMweb on 2026-12-01 (no longer available)"
    lesion = dataclasses.replace(first.lesions[0], images=(), gone=(gone,))
    previous = (
        Instance(image.StudyInstanceUID, earlier.SeriesInstanceUID, earlier.SOPClassUID, earlier.SOPInstanceUID),
    )
    reissued = dataclasses.replace(first, lesions=(lesion,), previous=previous, version=2, reissued="2026-12-01")
    head = next(t for t in _texts(build_sign_off_report(image, reissued, "test")) if "version 2" in t)
    assert head.startswith("RE-ISSUED by DermBridge on 2026-12-01 (version 2), not by the clinician: image 1.2.9.9")
    assert "findings and verification are unchanged" in head and earlier.SOPInstanceUID in head
    assert "AMENDED" not in head
