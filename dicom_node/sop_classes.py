"""The SOP classes and transfer syntaxes the node stores (see the DICOM conformance statement)."""

from __future__ import annotations

from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

VL_PHOTOGRAPHIC = UID("1.2.840.10008.5.1.4.1.1.77.1.4")
DERMOSCOPIC_PHOTOGRAPHY = UID("1.2.840.10008.5.1.4.1.1.77.1.7")
VL_MICROSCOPIC = UID("1.2.840.10008.5.1.4.1.1.77.1.2")
VIDEO_PHOTOGRAPHIC = UID("1.2.840.10008.5.1.4.1.1.77.1.4.1")
SECONDARY_CAPTURE = UID("1.2.840.10008.5.1.4.1.1.7")
MULTIFRAME_SINGLE_BIT_SC = UID("1.2.840.10008.5.1.4.1.1.7.1")
MULTIFRAME_GRAYSCALE_BYTE_SC = UID("1.2.840.10008.5.1.4.1.1.7.2")
MULTIFRAME_GRAYSCALE_WORD_SC = UID("1.2.840.10008.5.1.4.1.1.7.3")
MULTIFRAME_TRUE_COLOR_SC = UID("1.2.840.10008.5.1.4.1.1.7.4")
ENCAPSULATED_PDF = UID("1.2.840.10008.5.1.4.1.1.104.1")

STORAGE_CLASSES: dict[UID, str] = {
    VL_PHOTOGRAPHIC: "VL Photographic Image Storage",
    DERMOSCOPIC_PHOTOGRAPHY: "Dermoscopic Photography Image Storage",
    VL_MICROSCOPIC: "VL Microscopic Image Storage",
    VIDEO_PHOTOGRAPHIC: "Video Photographic Image Storage",
    SECONDARY_CAPTURE: "Secondary Capture Image Storage",
    MULTIFRAME_SINGLE_BIT_SC: "Multi-frame Single Bit Secondary Capture Image Storage",
    MULTIFRAME_GRAYSCALE_BYTE_SC: "Multi-frame Grayscale Byte Secondary Capture Image Storage",
    MULTIFRAME_GRAYSCALE_WORD_SC: "Multi-frame Grayscale Word Secondary Capture Image Storage",
    MULTIFRAME_TRUE_COLOR_SC: "Multi-frame True Color Secondary Capture Image Storage",
    ENCAPSULATED_PDF: "Encapsulated PDF Storage",
}

# Accepted and stored exactly as received: no transcoding on the way in. When a requestor proposes
# several in one context at the same rank, the first here wins (``transcoding.preference``): the
# compressed ones, lossless first, so an object already compressed is sent as it is.
TRANSFER_SYNTAXES: tuple[UID, ...] = (
    JPEGLSLossless,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    RLELossless,
    JPEGLSNearLossless,
    JPEG2000,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
)

NON_IMAGE_CLASSES = frozenset({ENCAPSULATED_PDF})

# The server's own objects: the AI results as DICOM (inference.dicom_results), stored by
# ``dicom_node.derived`` and sent on C-GET/C-MOVE, never accepted from a peer (not in STORAGE_CLASSES)
# and never analysed.
COMPREHENSIVE_3D_SR = UID("1.2.840.10008.5.1.4.1.1.88.34")
SEGMENTATION = UID("1.2.840.10008.5.1.4.1.1.66.4")
KEY_OBJECT_SELECTION = UID("1.2.840.10008.5.1.4.1.1.88.59")
AI_RESULT_CLASSES: dict[UID, str] = {
    COMPREHENSIVE_3D_SR: "Comprehensive 3D SR Storage (AI results and the signed-off decision, TID 1500)",
    SEGMENTATION: "Segmentation Storage (AI lesion mask)",
    KEY_OBJECT_SELECTION: "Key Object Selection Document Storage (the signed-off decision's key images)",
}
AI_RESULT_SYNTAXES: tuple[UID, ...] = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
RETRIEVABLE_CLASSES: dict[UID, str] = {**STORAGE_CLASSES, **AI_RESULT_CLASSES}

QR_FIND = (PatientRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelFind)
QR_GET = (PatientRootQueryRetrieveInformationModelGet, StudyRootQueryRetrieveInformationModelGet)
QR_MOVE = (PatientRootQueryRetrieveInformationModelMove, StudyRootQueryRetrieveInformationModelMove)
