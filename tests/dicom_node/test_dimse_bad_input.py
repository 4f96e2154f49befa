"""Malformed and incomplete instances get a failure status with an ErrorComment, never a crash,
and the association goes on; pydicom's own files are stored across transfer syntaxes."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pynetdicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.association import Association

from dicom_node import statuses
from dicom_node.sop_classes import STORAGE_CLASSES, TRANSFER_SYNTAXES
from tests.dicom_factories import dermoscopic, write
from tests.dicom_node.conftest import DicomNode

pytestmark = pytest.mark.interop
PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
# pydicom's sample files of the classes the node stores that carry what their IOD requires
STORABLE = [
    "JPEG-lossy.dcm", "JPEG2000.dcm", "JPGExtended.dcm", "SC_rgb_dcmtk_+eb+cy+np.dcm", "SC_rgb_gdcm_KY.dcm",
    "SC_rgb_jpeg_dcmd.dcm", "SC_rgb_jpeg_gdcm.dcm", "SC_rgb_rle.dcm", "SC_rgb_rle_16bit_2frame.dcm",
    "SC_rgb_small_odd.dcm", "SC_ybr_full_422_uncompressed.dcm", "image_dfl.dcm",
]  # fmt: skip
# and those that do not: the node must say what is missing
INCOMPLETE = {"SC_jpeg_no_color_transform.dcm": "Modality", "JPEGLSNearLossless_08.dcm": "StudyInstanceUID"}


@pytest.fixture
def association(node: DicomNode) -> Iterator[Association]:
    ae = AE(ae_title="PYNETDICOM")
    for sop_class in STORAGE_CLASSES:
        for syntax in TRANSFER_SYNTAXES:
            ae.add_requested_context(sop_class, syntax)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="DERMBRIDGE")
    assert assoc.is_established
    yield assoc
    if assoc.is_established:
        assoc.release()


def store(assoc: Association, dataset: Dataset | Path) -> Dataset:
    status = assoc.send_c_store(dataset)
    assert assoc.is_established, "the node dropped the association"
    return status


def without(keyword: str) -> Dataset:
    ds = dermoscopic()
    delattr(ds, keyword)
    return ds


@pytest.mark.parametrize(
    ("dataset", "comment"),
    [
        (without("PatientID"), "PatientID"),
        (without("StudyInstanceUID"), "StudyInstanceUID"),
        (without("Modality"), "Modality"),
        (without("PixelData"), "PixelData"),
        (without("Rows"), "Rows"),
        (without("PlanarConfiguration"), "PlanarConfiguration"),
    ],
    ids=["PatientID", "StudyInstanceUID", "Modality", "PixelData", "Rows", "PlanarConfiguration"],
)
def test_missing_attributes_are_refused_with_a_comment(
    association: Association, dataset: Dataset, comment: str
) -> None:
    status = store(association, dataset)
    assert status.Status == statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS
    assert comment in status.ErrorComment
    assert store(association, dermoscopic()).Status == statuses.SUCCESS  # the association goes on


def test_invalid_uid_and_short_pixel_data(association: Association) -> None:
    bad_uid = dermoscopic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the bad UID we mean to send
        bad_uid.SeriesInstanceUID = "1.2.abc"
    assert "SeriesInstanceUID" in store(association, bad_uid).ErrorComment
    short = dermoscopic()
    short.PixelData = short.PixelData[:100]
    status = store(association, short)
    assert status.Status == statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS
    assert "PixelData" in status.ErrorComment


def test_truncated_and_garbled_files(association: Association, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pynetdicom._config, "STORE_SEND_CHUNKED_DATASET", True)  # send the bytes as they are
    good = write(dermoscopic(), tmp_path / "good")
    data = good.read_bytes()
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(data[: len(data) * 2 // 3])
    garbled = tmp_path / "garbled.dcm"
    header_end = data.index(b"\x08\x00\x05\x00")  # the first dataset element after the file meta
    garbled.write_bytes(data[:header_end] + b"\x10\x00\x10\x00PN\xff\xff" + data[header_end + 8 :])
    for path in (truncated, garbled):
        status = store(association, path)
        assert status.Status in (statuses.CANNOT_UNDERSTAND, statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS)
        assert status.ErrorComment
    assert store(association, dermoscopic()).Status == statuses.SUCCESS


@pytest.mark.parametrize("name", STORABLE)
def test_pydicom_sample_files_are_stored_as_received(association: Association, node: DicomNode, name: str) -> None:
    path = PYDICOM_FILES / name
    assert store(association, path).Status == statuses.SUCCESS
    ds = pydicom.dcmread(path)
    assert node.stored(ds.SOPInstanceUID).file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID


@pytest.mark.parametrize(("name", "missing"), INCOMPLETE.items())
def test_pydicom_files_missing_required_attributes(association: Association, name: str, missing: str) -> None:
    status = store(association, PYDICOM_FILES / name)
    assert status.Status == statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS
    assert missing in status.ErrorComment


def test_nothing_is_left_behind_by_refusals(association: Association, node: DicomNode) -> None:
    store(association, without("Modality"))
    incoming = node.data_dir / "blobs" / "default" / ".incoming"
    assert not incoming.exists() or not list(incoming.iterdir())


def test_encapsulated_pdf_is_stored_and_linked(association: Association, node: DicomNode) -> None:
    from pydicom.uid import generate_uid

    from dicom_node.sop_classes import ENCAPSULATED_PDF

    report = dermoscopic()
    for keyword in ("PixelData", "Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated",
                    "BitsStored", "HighBit", "PixelRepresentation", "PlanarConfiguration"):  # fmt: skip
        delattr(report, keyword)
    report.SOPClassUID = report.file_meta.MediaStorageSOPClassUID = ENCAPSULATED_PDF
    report.SOPInstanceUID = report.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    report.Modality = "DOC"
    report.MIMETypeOfEncapsulatedDocument = "application/pdf"
    report.EncapsulatedDocument = b"%PDF-1.4\n%fake but well-framed\n"
    assert store(association, report).Status == statuses.SUCCESS
    media = node.client.get("/fhir/default/Media").json()["entry"][0]["resource"]
    assert media["content"]["contentType"] == "application/dicom"
    del report.MIMETypeOfEncapsulatedDocument
    report.SOPInstanceUID = report.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    status = store(association, report)
    assert status.Status == statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS
    assert "MIMEType" in status.ErrorComment


def test_a_retrieve_with_a_malformed_identifier_fails_with_a_comment(node: DicomNode) -> None:
    from pynetdicom.sop_class import PatientRootQueryRetrieveInformationModelGet  # type: ignore[attr-defined]

    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context(PatientRootQueryRetrieveInformationModelGet)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="DERMBRIDGE")
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "NOT-A-LEVEL"
    try:
        answers = [status for status, _ in assoc.send_c_get(query, PatientRootQueryRetrieveInformationModelGet)]
    finally:
        assoc.release()
    assert answers and answers[-1].Status == statuses.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS  # not Success
    assert answers[-1].ErrorComment
