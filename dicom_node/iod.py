"""Check that a dataset carries what its IOD requires before it is stored (PS3.3, PS3.4 B.2.3)."""

from __future__ import annotations

import re

from pydicom.dataset import Dataset

from dicom_node import statuses
from dicom_node.errors import InvalidInstance
from dicom_node.sop_classes import (
    COMPREHENSIVE_3D_SR,
    ENCAPSULATED_PDF,
    KEY_OBJECT_SELECTION,
    MULTIFRAME_GRAYSCALE_BYTE_SC,
    MULTIFRAME_GRAYSCALE_WORD_SC,
    MULTIFRAME_SINGLE_BIT_SC,
    MULTIFRAME_TRUE_COLOR_SC,
    SEGMENTATION,
    STORAGE_CLASSES,
    VIDEO_PHOTOGRAPHIC,
)

UID_PATTERN = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_TYPE1_COMMON = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality")
_TYPE2_COMMON = ("PatientName", "PatientID", "StudyDate", "StudyTime", "AccessionNumber")
_IMAGE_PIXEL = (
    "SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns",
    "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "PixelData",
)  # fmt: skip
_MULTI_FRAME = frozenset(
    {VIDEO_PHOTOGRAPHIC, SEGMENTATION, MULTIFRAME_SINGLE_BIT_SC, MULTIFRAME_GRAYSCALE_BYTE_SC,
     MULTIFRAME_GRAYSCALE_WORD_SC, MULTIFRAME_TRUE_COLOR_SC}
)  # fmt: skip


_ITEM_TAG = b"\xfe\xff\x00\xe0"  # (FFFE,E000) in little endian: the first item of encapsulated Pixel Data


def _fail(comment: str) -> InvalidInstance:
    return InvalidInstance(statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS, comment)


def _present(ds: Dataset, keyword: str) -> bool:
    return keyword in ds


def _value(ds: Dataset, keyword: str) -> object:
    try:
        return ds.get(keyword)
    except Exception as exc:  # a malformed element (bad VR, bad length) is a client error
        raise InvalidInstance(statuses.CANNOT_UNDERSTAND, f"cannot decode {keyword}") from exc


def check_instance(ds: Dataset, sop_class: str, sop_instance: str) -> None:
    """Raise InvalidInstance with the failure status and an ErrorComment saying what is wrong."""
    _check_identity(ds)
    if str(ds.SOPClassUID) != sop_class:
        raise _fail("SOPClassUID differs from the request's")
    if str(ds.SOPInstanceUID) != sop_instance:
        raise _fail("SOPInstanceUID differs from the request's")
    if sop_class not in STORAGE_CLASSES:
        raise _fail("SOP class not supported")
    if sop_class == ENCAPSULATED_PDF:
        _check_pdf(ds)
    else:
        _check_image(ds, sop_class)


def check_ai_result(ds: Dataset) -> None:
    """The server's own AI result objects, before they are stored: an SR's document (PS3.3 C.17.2/C.17.3:
    a CONTAINER root with its title, the completion and verification flags), a SEG's binary pixels and
    segments (C.8.20.2); both with the identifying attributes of any instance."""
    _check_identity(ds)
    sop_class = str(ds.SOPClassUID)
    if sop_class == COMPREHENSIVE_3D_SR:
        for keyword in ("ValueType", "ConceptNameCodeSequence", "ContentSequence", "CompletionFlag",
                        "VerificationFlag", "CurrentRequestedProcedureEvidenceSequence"):  # fmt: skip
            if not _value(ds, keyword):
                raise _fail(f"missing required {keyword} (SR Document Content / General modules)")
        if str(ds.ValueType) != "CONTAINER":
            raise _fail("the SR's root content item must be a CONTAINER")
    elif sop_class == KEY_OBJECT_SELECTION:  # PS3.3 A.35.4: Key Object Document and SR Document Content
        for keyword in ("ValueType", "ConceptNameCodeSequence", "ContentSequence",
                        "CurrentRequestedProcedureEvidenceSequence"):  # fmt: skip
            if not _value(ds, keyword):
                raise _fail(f"missing required {keyword} (Key Object Document / SR Document Content modules)")
    elif sop_class == SEGMENTATION:
        for keyword in ("SegmentSequence", "SegmentationType", "ReferencedSeriesSequence", "NumberOfFrames"):
            if not _value(ds, keyword):
                raise _fail(f"missing required {keyword} (Segmentation Image module)")
        _check_image(ds, sop_class)
    else:
        raise _fail("not an AI result SOP class (Comprehensive 3D SR, Segmentation, Key Object Selection)")


def _check_identity(ds: Dataset) -> None:
    for keyword in _TYPE1_COMMON:
        value = _value(ds, keyword)
        if value is None or str(value).strip() == "":
            raise _fail(f"missing required {keyword}")
    for keyword in _TYPE2_COMMON:
        if not _present(ds, keyword):
            raise _fail(f"missing {keyword} (type 2: may be empty)")
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        uid = str(_value(ds, keyword))
        if len(uid) > 64 or not UID_PATTERN.match(uid):
            raise _fail(f"{keyword} is not a valid UID")


def _check_pdf(ds: Dataset) -> None:
    for keyword in ("EncapsulatedDocument", "MIMETypeOfEncapsulatedDocument"):
        if not _present(ds, keyword):
            raise _fail(f"missing required {keyword}")
    if str(_value(ds, "MIMETypeOfEncapsulatedDocument")) != "application/pdf":
        raise _fail("MIMETypeOfEncapsulatedDocument must be application/pdf")


def _check_image(ds: Dataset, sop_class: str) -> None:
    for keyword in _IMAGE_PIXEL:
        if _value(ds, keyword) is None:
            raise _fail(f"missing required {keyword} (Image Pixel module)")
    samples = int(_value(ds, "SamplesPerPixel"))  # type: ignore[call-overload]
    if samples > 1 and _value(ds, "PlanarConfiguration") is None:
        raise _fail("missing PlanarConfiguration for a colour image")
    frames = 1
    if sop_class in _MULTI_FRAME:
        raw = _value(ds, "NumberOfFrames")
        if raw is None:
            raise _fail("missing required NumberOfFrames")
        frames = int(raw)  # type: ignore[call-overload]
    elif _value(ds, "NumberOfFrames") is not None:
        frames = int(ds.NumberOfFrames)
    _check_pixel_length(ds, samples, frames)


def _check_encapsulated(ds: Dataset) -> None:
    """Pixel Data of a compressed transfer syntax is encapsulated (PS3.5 A.4: items, of undefined length;
    a defined length around the items, as pydicom writes when not told otherwise, is tolerated); the
    node stores objects as received, so one whose pixels do not match its syntax is refused (C000)."""
    element = ds["PixelData"]
    if not element.is_undefined_length and bytes(element.value[:4]) != _ITEM_TAG:
        syntax = ds.file_meta.TransferSyntaxUID
        raise InvalidInstance(statuses.CANNOT_UNDERSTAND, f"Pixel Data is not encapsulated as {syntax.name} needs")


def _check_pixel_length(ds: Dataset, samples: int, frames: int) -> None:
    """Native pixel data must hold every frame; a truncated object is refused."""
    if ds.file_meta.get("TransferSyntaxUID") is not None and ds.file_meta.TransferSyntaxUID.is_compressed:
        _check_encapsulated(ds)
        return
    rows, columns, bits = int(ds.Rows), int(ds.Columns), int(ds.BitsAllocated)
    if min(rows, columns, bits, samples, frames) <= 0:
        raise _fail("Rows, Columns, BitsAllocated, SamplesPerPixel must be positive")
    if str(ds.get("PhotometricInterpretation", "")) == "YBR_FULL_422":
        samples = 2  # chroma subsampled horizontally: two samples a pixel on average
    expected = (rows * columns * samples * frames * bits + 7) // 8
    actual = len(ds.PixelData)
    if actual < expected and bytes(ds.PixelData[:4]) == _ITEM_TAG:  # PS3.5 A.4: compressed, in a native syntax
        raise InvalidInstance(statuses.CANNOT_UNDERSTAND, "Pixel Data is compressed but the syntax is uncompressed")
    if actual < expected:
        raise _fail(f"PixelData has {actual} bytes, the image needs {expected}")
