"""AI results as DICOM (issue 17, IHE AI Results): after an image's analysis, its study holds a TID 1500 SR
and a SEG of the lesion as new series, found by QIDO-RS, retrieved by a real C-GET (pynetdicom as SCU) and by
WADO-RS, readable by pydicom, highdicom and dcmtk's dcmdump, and linked from FHIR; the AI never analyses them,
a peer cannot store them, and a failure to make them leaves the findings standing."""

from __future__ import annotations

import email.parser
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
)

from dicom_node.iod import check_ai_result
from dicom_node.sop_classes import COMPREHENSIVE_3D_SR, SEGMENTATION
from fhir_server.repository import Repository
from inference.accepted_inputs import AcceptedInputs
from inference.admission import check_attributes
from inference.dicom_output import DICOM_SR_EXTENSION, write_dicom_results
from inference.findings import ImageContext
from inference.pipeline import Prediction
from inference.segmentation import Segmentation, segment
from tests.conftest import FhirTestClient, make_client
from tests.inference.test_findings import DIAGNOSIS, EVERY_CLASS, search
from tests.inference.test_worker import (
    DEADLINE,
    SALIENCY,
    consenting_patient,
    dimse_port,
    lesion_instance,
    send,
    wait_for,
)

pytestmark = pytest.mark.interop
DICOMWEB = "/dicomweb/default"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[FhirTestClient]:
    with make_client(tmp_path / "var", inference_enabled=True, dicom_any_ae_tenant="default") as client:
        yield client


def _qido(client: FhirTestClient, path: str) -> list[dict[str, Any]]:
    response = client.get(f"{DICOMWEB}/{path}", headers={"Accept": "application/dicom+json"})
    assert response.status_code == 200, response.text
    return list(response.json())


def _value(item: dict[str, Any], tag: str) -> Any:
    return item[tag]["Value"][0]


def _wado(client: FhirTestClient, study: str, series: str, instance: str) -> Dataset:
    accept = 'multipart/related; type="application/dicom"'
    url = f"{DICOMWEB}/studies/{study}/series/{series}/instances/{instance}"
    response = client.get(url, headers={"Accept": accept})
    assert response.status_code == 200, response.text
    head = f"Content-Type: {response.headers['content-type']}\r\n\r\n".encode()
    message = email.parser.BytesParser().parsebytes(head + response.content)
    parts = [part.get_payload(decode=True) for part in message.walk() if part.get_content_type() == "application/dicom"]
    assert len(parts) == 1
    return pydicom.dcmread(pydicom.filebase.DicomBytesIO(parts[0]))


def _c_get(port: int, study: str, series: str) -> list[Dataset]:
    """A real C-GET of one series (pynetdicom as SCU, storage SCP role for the SR and SEG classes)."""
    received: list[Dataset] = []

    def on_store(event: Any) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        received.append(ds)
        return 0x0000

    ae = AE(ae_title="VIEWER")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    for sop_class in (COMPREHENSIVE_3D_SR, SEGMENTATION):
        ae.add_requested_context(sop_class)
    roles = [build_role(sop_class, scp_role=True) for sop_class in (COMPREHENSIVE_3D_SR, SEGMENTATION)]
    assoc = ae.associate("127.0.0.1", port, ae_title="DERMBRIDGE", ext_neg=roles,
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])  # fmt: skip
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "SERIES"
    query.StudyInstanceUID, query.SeriesInstanceUID = study, series
    statuses = [int(status.Status) for status, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)]
    assoc.release()
    assert statuses[-1] == 0x0000, [hex(s) for s in statuses]
    return received


def _c_find_modalities(port: int, study: str) -> list[str]:
    ae = AE(ae_title="VIEWER")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", port, ae_title="DERMBRIDGE")
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel, query.StudyInstanceUID, query.Modality = "SERIES", study, ""
    found = [str(ds.Modality) for status, ds in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)
             if ds is not None and int(status.Status) in (0xFF00, 0xFF01)]  # fmt: skip
    assoc.release()
    return sorted(found)


def _dcmdump(ds: Dataset, tmp_path: Path) -> str:
    path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    result = subprocess.run(["dcmdump", "-q", "-dc", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "E:" not in result.stderr, result.stderr
    return result.stdout


def test_the_study_gets_an_sr_and_a_seg_found_retrieved_parsed_and_linked(node: FhirTestClient, tmp_path: Path) -> None:
    patient_id = consenting_patient(node, "SR-1")
    image = lesion_instance("SR-1", seed=21)
    image.ImageLaterality = "L"
    send(node, tmp_path, image)
    subject = {"subject": f"Patient/{patient_id}"}
    wait_for(node, "Media", {**subject, "modality": SALIENCY})  # step 2 done: the SR and SEG come before it
    study = str(image.StudyInstanceUID)
    lesion_id = search(node, "BodyStructure", {"patient": f"Patient/{patient_id}"})[0]["id"]

    # QIDO-RS: the image's series and two new ones, SR and SEG, of the same study and patient
    series = {_value(s, "00080060"): s for s in _qido(node, f"studies/{study}/series")}
    assert set(series) == {"DMS", "SR", "SEG"}
    assert "DEMONSTRATION" in _value(series["SR"], "0008103E") and "DEMONSTRATION" in _value(series["SEG"], "0008103E")
    sr_series, seg_series = _value(series["SR"], "0020000E"), _value(series["SEG"], "0020000E")
    [sr_item] = _qido(node, f"studies/{study}/series/{sr_series}/instances")
    sr_uid = _value(sr_item, "00080018")

    # a real C-FIND (pynetdicom as SCU) finds the same three series
    assert _c_find_modalities(dimse_port(node), study) == ["DMS", "SEG", "SR"]

    # a real C-GET of each series, and WADO-RS: the same objects
    [sr] = _c_get(dimse_port(node), study, sr_series)
    [seg] = _c_get(dimse_port(node), study, seg_series)
    assert _wado(node, study, sr_series, sr_uid).SOPInstanceUID == sr.SOPInstanceUID == sr_uid
    for derived in (sr, seg):  # same patient and study, new series, DermBridge + the model as equipment
        identity = (derived.PatientID, derived.StudyInstanceUID, derived.IssuerOfPatientID)
        assert identity == ("SR-1", study, "urn:clinic:mrn")
        assert derived.SeriesInstanceUID != image.SeriesInstanceUID and derived.Manufacturer == "DermBridge"
        assert "demo-abcd" in " ".join(derived.SoftwareVersions)
        check_ai_result(derived)  # the IOD check the node applies before storing them
        _dcmdump(derived, tmp_path)

    # the SR: TID 1500, parsed back by highdicom; the lesion, its site and laterality, the model, the scores
    assert sr.SOPClassUID == COMPREHENSIVE_3D_SR and sr.VerificationFlag == "UNVERIFIED"
    report = hd.sr.srread(_saved(sr, tmp_path))
    [group] = report.content.get_planar_roi_measurement_groups()
    assert group.finding_type.value == "52988006"
    [site] = group.finding_sites
    assert (site.value.value, site.laterality.value) == ("39937001", "7771000")  # Skin structure, Left
    assert group.tracking_identifier == f"Lesion at Skin structure, Left (BodyStructure/{lesion_id})"
    measured = {m.name.value: m.value for m in group.get_measurements()}
    scores = {k: v for k, v in measured.items() if k.startswith("probability-of-")}
    assert set(scores) == {"probability-of-400096001", "probability-of-93655004"}
    assert set(measured) - set(scores) == {"threshold-of-400096001", "threshold-of-93655004"}
    assert all(0.001 <= v <= 0.999 for v in scores.values())  # never 0 or 1, as in FHIR
    assert {m.unit.value for m in group.get_measurements()} == {"1"}
    evaluations = {q.name.value: q.value for q in group.get_qualitative_evaluations()}
    assert evaluations["reading-of-93655004"].value in ("10828004", "42425007", "260385009")
    assert "reading-of-400096001" not in evaluations  # a benign class gets no reading, as in FHIR
    if "439401001" in evaluations:  # a demonstration model never writes a SNOMED CT disease
        assert evaluations["439401001"].scheme_designator == "99DERMBRIDGE"
        assert "not a diagnosis" in evaluations["439401001"].meaning
    dump = _dcmdump(sr, tmp_path)
    assert "Algorithm Version" in dump and "weights SHA-256:" in dump  # TID 4019
    assert "DEMONSTRATION, not for clinical use" in dump
    assert group.reference_type.value == "121214"  # Referenced Segmentation Frame: the SEG's lesion segment
    assert str(seg.SOPInstanceUID) in dump and str(image.SOPInstanceUID) in dump  # it and the source image

    # the SEG: highdicom parses it; its one segment is a lesion mask lying on the image's lesion
    segmentation = hd.seg.segread(_saved(seg, tmp_path))
    assert segmentation.get_segment_numbers() == [1]
    assert "DEMONSTRATION" in seg.ContentDescription and "DEMONSTRATION" in seg.SegmentSequence[0].SegmentLabel
    mask = segmentation.pixel_array.reshape(int(image.Rows), int(image.Columns)) > 0
    luminance = np.asarray(image.pixel_array, np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    assert 0.01 < mask.mean() < 0.8
    assert luminance[mask].mean() < luminance[~mask].mean() - 30  # the dark lesion, not the skin
    rows, columns = np.nonzero(mask)
    assert abs(rows.mean() - image.Rows / 2) < image.Rows / 4  # around the middle, where the lesion was drawn
    assert abs(columns.mean() - image.Columns / 2) < image.Columns / 4

    # FHIR: the ImagingStudy lists them, the case references that ImagingStudy, the results name the SR
    imaging = search(node, "ImagingStudy", subject)[0]
    modalities = {s["modality"]["code"]: s for s in imaging["series"]}
    assert modalities["SR"]["instance"][0]["uid"] == sr_uid and modalities["SEG"]["uid"] == seg_series
    case = search(node, "DiagnosticReport", subject)[0]
    assert {"reference": f"ImagingStudy/{imaging['id']}"} in case["imagingStudy"]
    for result in search(node, "Observation", {**subject, "code": f"{EVERY_CLASS},{DIAGNOSIS}"}):
        links = [e for e in result.get("extension", []) if e["url"] == DICOM_SR_EXTENSION]
        assert links == [{"url": DICOM_SR_EXTENSION,
                          "valueIdentifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{sr_uid}"}}]  # fmt: skip
    # made again (a redelivered event): the same UIDs, so nothing is stored or linked twice
    versions = {o["id"]: o["meta"]["versionId"] for o in search(node, "Observation", subject)}
    context = ImageContext(str(image.SOPInstanceUID), patient_id, search(node, "Media", subject)[0]["id"],
                           imaging["id"], case["id"], lesion_id=lesion_id)  # fmt: skip
    again = _write(node, image, context, segment(np.asarray(image.pixel_array)))
    assert again is not None and again.sr.SOPInstanceUID == sr_uid
    assert len(_qido(node, f"studies/{study}/series/{sr_series}/instances")) == 1
    assert {o["id"]: o["meta"]["versionId"] for o in search(node, "Observation", subject)} == versions

    # nothing else: no Media, lesion, identity review or second analysis for the SR and SEG
    assert len(search(node, "Media", subject)) == 2  # the image and its saliency map
    assert len(search(node, "BodyStructure", {"patient": f"Patient/{patient_id}"})) == 1
    assert search(node, "Task", {"code": "urn:dermbridge:task|patient-identity-review"}) == []
    assert search(node, "Task", {"code": "urn:dermbridge:task|ai-dicom-results"}) == []
    assert len(search(node, "Observation", {**subject, "code": EVERY_CLASS})) == 2


def _write(node: FhirTestClient, image: Dataset, context: ImageContext, lesion: Segmentation | None) -> Any:
    """The worker's DICOM output for ``image``, run as the worker runs it (its blobs, a system context)."""
    worker = node.app.state.inference  # type: ignore[attr-defined]
    runner = worker.runners[0]

    async def run() -> Any:
        store = await node.app.state.engine.tenant("default")  # type: ignore[attr-defined]
        repo = Repository.system(store, reason="test")
        return await write_dicom_results(repo, worker.files.blobs, image, context, runner.model.card,
                                         Prediction((0.2, 0.8)), lesion, server_version=worker.server_version,
                                         weights_sha256=runner.model.weights_sha256)  # fmt: skip

    return node.portal.call(run)


def _saved(ds: Dataset, tmp_path: Path) -> Path:
    path = tmp_path / f"hd-{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_a_peer_cannot_store_an_sr_and_admission_refuses_one(node: FhirTestClient, tmp_path: Path) -> None:
    """The AI results' classes are the server's own: a C-STORE of one is refused, and no card admits one."""
    patient_id = consenting_patient(node, "SR-2")
    send(node, tmp_path, lesion_instance("SR-2", seed=22))
    wait_for(node, "Media", {"subject": f"Patient/{patient_id}", "modality": SALIENCY})
    study = str(search(node, "ImagingStudy", {"subject": f"Patient/{patient_id}"})[0]["identifier"][0]["value"])
    sr_series = next(s for s in _qido(node, f"studies/{study[8:]}/series") if _value(s, "00080060") == "SR")
    [sr] = _c_get(dimse_port(node), study[8:], _value(sr_series, "0020000E"))
    sr.SOPInstanceUID = pydicom.uid.generate_uid()
    sr.file_meta.MediaStorageSOPInstanceUID = sr.SOPInstanceUID
    ae = AE(ae_title="PEER")
    ae.add_requested_context(COMPREHENSIVE_3D_SR, str(sr.file_meta.TransferSyntaxUID))
    assoc = ae.associate("127.0.0.1", dimse_port(node), ae_title="DERMBRIDGE")
    assert assoc.is_established
    status = assoc.send_c_store(sr)
    assoc.release()
    assert (int(status.Status), status.ErrorComment) == (0xA900, "SOP class not supported")
    assert len(_qido(node, f"studies/{study[8:]}/series/{_value(sr_series, '0020000E')}/instances")) == 1
    for sop_class in (COMPREHENSIVE_3D_SR, SEGMENTATION):  # whatever a card accepts (here: anything)
        ds = Dataset()
        ds.SOPClassUID, ds.Modality = sop_class, "SR"
        assert [p.code for p in check_attributes(ds, AcceptedInputs(photometric_interpretations=()))] == ["sop-class"]


def test_a_failure_to_make_them_is_recorded_and_the_findings_stand(node: FhirTestClient, tmp_path: Path) -> None:
    """An image whose study is not on record (its index gone): no SR, a Task saying why, and nothing lost."""
    patient_id = consenting_patient(node, "SR-3")
    image = lesion_instance("SR-3", seed=23)
    send(node, tmp_path, image)
    subject = {"subject": f"Patient/{patient_id}"}
    wait_for(node, "Media", {**subject, "modality": SALIENCY})
    before = search(node, "Observation", {**subject, "code": EVERY_CLASS})
    media = search(node, "Media", {**subject, "modality": "http://dicom.nema.org/resources/ontology/DCM|DMS"})[0]
    imaging = search(node, "ImagingStudy", subject)[0]
    case = search(node, "DiagnosticReport", subject)[0]
    elsewhere = lesion_instance("SR-3", seed=23)  # the same pixels in a study the node never stored
    context = ImageContext(str(elsewhere.SOPInstanceUID), patient_id, media["id"], imaging["id"], case["id"])

    assert _write(node, elsewhere, context, None) is None
    deadline = time.monotonic() + DEADLINE
    while not (tasks := search(node, "Task", {"code": "urn:dermbridge:task|ai-dicom-results"})):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert tasks[0]["status"] == "failed" and "findings of this image were committed and stand" in tasks[0][
        "statusReason"]["text"]  # fmt: skip
    assert [o["id"] for o in search(node, "Observation", {**subject, "code": EVERY_CLASS})] == [o["id"] for o in before]


def test_an_object_stored_first_under_the_srs_uid_is_a_recorded_failure(node: FhirTestClient, tmp_path: Path) -> None:
    """The SR's and SEG's UIDs derive from the image's: a peer storing an object under one first does not make
    the node skip its SR in silence (pentest 3, finding 5): the case gets a failed Task, the findings stand."""
    from inference.dicom_results import derived_uid

    patient_id = consenting_patient(node, "SR-9")
    image = lesion_instance("SR-9", seed=21)
    decoy = lesion_instance("OTHER-9", seed=40)
    decoy.AccessionNumber = "OTHER-ORDER-9"  # another patient's order (a shared accession holds the AI: order_match)
    decoy.SOPInstanceUID = derived_uid(str(image.SOPInstanceUID), "dermbridge-demo-abcd@1.0.0", "sr")
    decoy.file_meta.MediaStorageSOPInstanceUID = decoy.SOPInstanceUID
    send(node, tmp_path, decoy)
    send(node, tmp_path, image)
    subject = {"subject": f"Patient/{patient_id}"}
    wait_for(node, "Media", {**subject, "modality": SALIENCY})
    deadline = time.monotonic() + DEADLINE
    while not (tasks := search(node, "Task", {"code": "urn:dermbridge:task|ai-dicom-results"})):
        assert time.monotonic() < deadline, "no failure recorded for the SR whose UID another object holds"
        time.sleep(0.05)
    assert tasks[0]["status"] == "failed" and "held by another object" in str(tasks[0])
    assert search(node, "Observation", {**subject, "code": EVERY_CLASS})  # the findings stand
