"""Transfer syntax negotiation and decompression on DIMSE: a pynetdicom SCU proposing several syntaxes in one
context, dcmtk's getscu and movescu retrieving a JPEG study into peers that accept only uncompressed."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
)
from pynetdicom import AE, build_context

from tests.dicom_factories import VL_PHOTOGRAPHIC, dermoscopic, write
from tests.dicom_node.conftest import DicomNode, wait_for

pytestmark = pytest.mark.interop


def _store_over_one_context(node: DicomNode, ds: pydicom.Dataset, proposed: list[str | UID]) -> tuple[UID, int]:
    """C-STORE ``ds`` from a pynetdicom SCU proposing ``proposed`` in one presentation context: the syntax
    the node accepted and the status it answered."""
    ae = AE(ae_title="PYNETDICOM")
    ae.requested_contexts = [build_context(ds.SOPClassUID, proposed)]
    assoc = ae.associate("127.0.0.1", node.port, ae_title="DERMBRIDGE")
    assert assoc.is_established
    try:
        accepted = UID(assoc.accepted_contexts[0].transfer_syntax[0])
        status = assoc.send_c_store(ds)
        return accepted, int(status.Status)
    finally:
        assoc.release()


def test_one_context_with_jpeg_first_accepts_jpeg_and_stores_it_unchanged(node: DicomNode) -> None:
    ds = dermoscopic(syntax=JPEGBaseline8Bit)
    accepted, status = _store_over_one_context(
        node, ds, [JPEGBaseline8Bit, ExplicitVRLittleEndian, ImplicitVRLittleEndian]
    )
    assert (accepted, status) == (JPEGBaseline8Bit, 0x0000)
    kept = node.stored(ds.SOPInstanceUID)
    assert kept.file_meta.TransferSyntaxUID == JPEGBaseline8Bit and kept.PixelData == ds.PixelData


def test_one_context_with_native_first_accepts_the_native_syntax(node: DicomNode) -> None:
    ds = dermoscopic()  # uncompressed: accepting a compressed syntax would make the sender encode it
    accepted, status = _store_over_one_context(node, ds, [ExplicitVRLittleEndian, JPEGLSLossless, JPEGBaseline8Bit])
    assert (accepted, status) == (ExplicitVRLittleEndian, 0x0000)


def _jpeg_study(node: DicomNode, tmp_path: Path) -> pydicom.Dataset:
    """A JPEG Baseline image stored as received (VL Photographic: dcmtk's built-in context lists know it)."""
    ds = dermoscopic(sop_class=VL_PHOTOGRAPHIC, syntax=JPEGBaseline8Bit)
    node.run("storescu", "-xy", str(write(ds, tmp_path / "in")), check=True)
    assert node.stored(ds.SOPInstanceUID).file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    return ds


def _assert_decompressed(received: Path, sent: pydicom.Dataset) -> None:
    ds = pydicom.dcmread(received)
    assert ds.SOPInstanceUID == sent.SOPInstanceUID  # the same instance, another encoding
    assert not ds.file_meta.TransferSyntaxUID.is_compressed  # (the file's syntax is the receiver's choice)
    assert ds.PhotometricInterpretation == "RGB"
    assert ds.LossyImageCompression == "01" and ds.LossyImageCompressionMethod == "ISO_10918_1"  # still said
    assert (ds.pixel_array == sent.pixel_array).all()  # the same decoder: no loss beyond the sender's JPEG


@pytest.mark.parametrize("option", ["+xe", "+xi"])  # explicit VR first, implicit VR only
def test_getscu_accepting_only_uncompressed_receives_a_jpeg_study_decompressed(
    node: DicomNode, tmp_path: Path, option: str
) -> None:
    ds = _jpeg_study(node, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    result = node.run("getscu", "-S", option, "-k", "QueryRetrieveLevel=STUDY",
                      "-k", f"StudyInstanceUID={ds.StudyInstanceUID}", "-od", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "OutOfResources" not in result.stderr and "Failed" not in result.stderr
    (received,) = list(out.iterdir())
    _assert_decompressed(received, ds)


def test_movescu_into_a_peer_accepting_only_uncompressed_receives_a_jpeg_study_decompressed(
    node: DicomNode, tmp_path: Path
) -> None:
    ds = _jpeg_study(node, tmp_path)
    out = tmp_path / "moved"
    out.mkdir()
    # storescp accepts the uncompressed syntaxes only unless told otherwise (+xa)
    receiver = subprocess.Popen(["storescp", "-aet", "MOVEDEST", "-od", str(out), str(node.move_port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        moved = _move_when_listening(node, ds)
        assert moved.returncode == 0, moved.stderr
        assert wait_for(lambda: len(list(out.iterdir())) == 1)
        _assert_decompressed(next(out.iterdir()), ds)
    finally:
        receiver.terminate()
        receiver.wait(timeout=10)


def _move_when_listening(node: DicomNode, ds: pydicom.Dataset) -> subprocess.CompletedProcess[str]:
    """movescu to MOVEDEST, retried until storescp listens (a sub-association refused answers A801)."""
    attempts: list[subprocess.CompletedProcess[str]] = []

    def moved() -> bool:
        attempts.append(node.run("movescu", "-S", "-aem", "MOVEDEST", "-k", "QueryRetrieveLevel=STUDY",
                                 "-k", f"StudyInstanceUID={ds.StudyInstanceUID}"))  # fmt: skip
        return "UnableToPerformSubOperations" not in attempts[-1].stderr and "Refused" not in attempts[-1].stderr

    assert wait_for(moved)
    return attempts[-1]


def _store_refused(node: DicomNode, dataset: pydicom.Dataset | Path, sop_class: str, syntax: UID) -> pydicom.Dataset:
    ae = AE(ae_title="PYNETDICOM")
    ae.requested_contexts = [build_context(sop_class, syntax)]
    assoc = ae.associate("127.0.0.1", node.port, ae_title="DERMBRIDGE")
    assert assoc.is_established
    try:
        response: pydicom.Dataset = assoc.send_c_store(dataset)
        return response
    finally:
        assoc.release()


def test_compressed_pixels_sent_in_an_uncompressed_syntax_are_refused_saying_so(node: DicomNode) -> None:
    ds = dermoscopic(syntax=JPEGBaseline8Bit)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian  # the JPEG stream, labelled uncompressed
    response = _store_refused(node, ds, ds.SOPClassUID, ExplicitVRLittleEndian)
    assert response.Status == 0xC000
    assert "compressed but the syntax is uncompressed" in response.ErrorComment


def test_native_pixels_sent_in_a_compressed_syntax_are_refused_saying_so(node: DicomNode, tmp_path: Path) -> None:
    ds = dermoscopic()
    path = write(ds, tmp_path)
    # the same file with its File Meta saying RLE Lossless (UIDs of equal length): the pixels stay native
    path.write_bytes(path.read_bytes().replace(b"1.2.840.10008.1.2.1\x00", b"1.2.840.10008.1.2.5\x00", 1))
    response = _store_refused(node, path, ds.SOPClassUID, RLELossless)
    assert response.Status == 0xC000
    assert "not encapsulated" in response.ErrorComment
