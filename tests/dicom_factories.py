"""Synthetic dermoscopic DICOM instances for tests, in every transfer syntax the node accepts."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from dicom_node.sop_classes import DERMOSCOPIC_PHOTOGRAPHY, SECONDARY_CAPTURE, VL_PHOTOGRAPHIC

ROOT = "1.2.826.0.1.3680043.8.498."
SYNTAXES = (
    ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, JPEGBaseline8Bit,
    RLELossless, JPEGLSLossless, JPEG2000Lossless,
)  # fmt: skip


def lesion_pixels(seed: int, rows: int = 48, cols: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:cols]
    image = np.empty((rows, cols, 3), np.uint8)
    image[...] = (224, 172, 135)
    radius = min(rows, cols) * rng.uniform(0.2, 0.35)
    inside = np.hypot(yy - rows / 2, xx - cols / 2) < radius
    image[inside] = (95, 60, 45)
    return image


def dermoscopic(
    *,
    patient_id: str = "DERM0001",
    patient_name: str = "MUSTER^ANNA",
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    sop_class: UID = DERMOSCOPIC_PHOTOGRAPHY,
    accession: str = "ACC0001",
    study_date: str = "20240105",
    seed: int = 1,
    syntax: UID = ExplicitVRLittleEndian,
) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid or generate_uid(ROOT)
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.IssuerOfPatientID = "urn:clinic:mrn"
    ds.PatientBirthDate = "19700502"
    ds.PatientSex = "F"
    ds.StudyInstanceUID = study_uid or generate_uid(ROOT)
    ds.StudyDate = ds.ContentDate = study_date
    ds.StudyTime = ds.ContentTime = "101500"
    ds.AccessionNumber = accession
    ds.ReferringPhysicianName = ""
    ds.StudyID = "S1"
    ds.StudyDescription = "Dermoscopy"
    ds.Modality = "DMS" if sop_class == DERMOSCOPIC_PHOTOGRAPHY else "XC"
    ds.SeriesInstanceUID = series_uid or generate_uid(ROOT)
    ds.SeriesNumber = 1
    ds.SeriesDescription = "Lesion images"
    ds.InstanceNumber = 1
    ds.ImageLaterality = "U"
    region = Dataset()
    region.CodeValue, region.CodingSchemeDesignator, region.CodeMeaning = "39937001", "SCT", "Skin structure"
    ds.AnatomicRegionSequence = [region]
    ds.SamplesPerPixel = 3
    ds.PlanarConfiguration = 0
    pixels = lesion_pixels(seed)
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PhotometricInterpretation = "RGB"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    _encode(ds, pixels, syntax)
    return ds


def _encode(ds: Dataset, pixels: np.ndarray, syntax: UID) -> None:
    if syntax == JPEGBaseline8Bit:
        buffer = io.BytesIO()
        Image.fromarray(pixels, "RGB").save(buffer, "JPEG", quality=90)
        ds.PhotometricInterpretation = "YBR_FULL_422"
        ds.PixelData = encapsulate([buffer.getvalue()])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = syntax
    elif syntax.is_compressed:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.PixelData = pixels.tobytes()
        ds.compress(syntax, pixels)
    else:
        ds.PixelData = pixels.tobytes()
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = syntax


def with_pixels(ds: Dataset, pixels: np.ndarray, *, modality: str | None = None, grey: bool = False) -> Dataset:
    """``ds`` holding ``pixels`` (RGB uint8; ``grey``: stored MONOCHROME2 from the first channel),
    uncompressed; a Secondary Capture gets its ConversionType (SD: a scanned document)."""
    if modality is not None:
        ds.Modality = modality
    if str(ds.SOPClassUID) == str(SECONDARY_CAPTURE):
        ds.ConversionType = "SD"
    if grey:
        pixels = np.ascontiguousarray(pixels[..., 0])
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        del ds.PlanarConfiguration
    else:
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.PixelData = pixels.tobytes()
    ds["PixelData"].VR = "OB"
    return ds


def write(ds: Dataset, directory: Path, name: str | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / (name or f"{ds.SOPInstanceUID}.dcm")
    ds.save_as(path, enforce_file_format=True)
    return path


__all__ = ["SYNTAXES", "VL_PHOTOGRAPHIC", "dermoscopic", "write"]


def stow_body(*datasets: Dataset, boundary: str = "dermbridge-test") -> tuple[bytes, str]:
    """A STOW-RS request body of ``datasets`` and its Content-Type."""
    parts = []
    for ds in datasets:
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        parts.append(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + buffer.getvalue() + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'
