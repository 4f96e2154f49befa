"""Profiles of what a stored image becomes in FHIR (``dicom_node.fhir_sync``, ``dicom_node.lesions``): the
case (DiagnosticReport), the lesion (BodyStructure), the dermoscopic ImagingStudy and Media."""

from __future__ import annotations

from typing import Any

from conformance.profiles.builder import element, invariant, profile, reference, sliced
from dicom_node.fhir_sync import CASE_CODE, DICOM_UID_SYSTEM, MEDIA_TYPE_IMAGE
from dicom_node.lesions import LESION_MORPHOLOGY, LESION_SYSTEM
from fhir_server import declared_profiles as urls

V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
CID_4029 = "https://dermbridge.org/fhir/ValueSet/dicom-cid-4029"


def case_report() -> dict[str, Any]:
    return profile(
        urls.CASE_REPORT,
        "DiagnosticReport",
        "DermBridge case",
        "The dermatology case: one per imaging study, opened when its first image is stored (status "
        "registered), preliminary while the AI has spoken, final once a clinician signed it off.",
        [
            sliced("DiagnosticReport.identifier", "value", "system"),
            element("DiagnosticReport.identifier:studyUid", short="The DICOM Study Instance UID", min=1, max="1"),
            element("DiagnosticReport.identifier:studyUid.system", min=1, fixedUri=DICOM_UID_SYSTEM),
            element("DiagnosticReport.identifier:studyUid.value", min=1),
            sliced("DiagnosticReport.category", "pattern", "$this", min=1),
            element(
                "DiagnosticReport.category:imaging",
                min=1,
                max="1",
                patternCodeableConcept={"coding": [{"system": V2_0074, "code": "IMG"}]},
            ),
            element("DiagnosticReport.code", patternCodeableConcept={"coding": [CASE_CODE]}),
            element("DiagnosticReport.subject", min=1, type=reference("Patient")),
            element("DiagnosticReport.imagingStudy", type=reference("ImagingStudy")),
            element("DiagnosticReport.resultsInterpreter", type=reference("Practitioner", "PractitionerRole")),
            element("DiagnosticReport.media.link", type=reference("Media")),
        ],
        constraints=(
            invariant(
                "dbr-case-1",
                "A signed-off case (final, amended, corrected) names the clinician who signed it",
                "(status = 'final' or status = 'amended' or status = 'corrected') implies resultsInterpreter.exists()",
            ),
        ),
    )


def lesion() -> dict[str, Any]:
    return profile(
        urls.LESION,
        "BodyStructure",
        "DermBridge skin lesion",
        "One skin lesion of a patient, followed across visits: identified by the device's lesion key, coded "
        "SNOMED CT 52988006 |Lesion|, located by the image's anatomic region (DICOM CID 4029) and laterality.",
        [
            sliced("BodyStructure.identifier", "value", "system", min=1),
            element(
                "BodyStructure.identifier:lesion", short="The lesion key (device's key, per patient)", min=1, max="1"
            ),
            element("BodyStructure.identifier:lesion.system", min=1, fixedUri=LESION_SYSTEM),
            element("BodyStructure.identifier:lesion.value", min=1),
            element("BodyStructure.morphology", min=1, patternCodeableConcept={"coding": LESION_MORPHOLOGY["coding"]}),
            element("BodyStructure.location", binding={"strength": "extensible", "valueSet": CID_4029}),
            element("BodyStructure.description", min=1),
            element("BodyStructure.patient", type=reference("Patient")),
        ],
    )


def dermoscopic_study() -> dict[str, Any]:
    return profile(
        urls.DERMOSCOPIC_STUDY,
        "ImagingStudy",
        "DermBridge dermoscopic imaging study",
        "A DICOM study of skin images held by DermBridge: its Study Instance UID, its series and instances, "
        "and the DICOMweb endpoint that serves them.",
        [
            sliced("ImagingStudy.identifier", "value", "system", min=1),
            element("ImagingStudy.identifier:studyUid", min=1, max="1"),
            element("ImagingStudy.identifier:studyUid.system", min=1, fixedUri=DICOM_UID_SYSTEM),
            element("ImagingStudy.identifier:studyUid.value", min=1),
            element("ImagingStudy.subject", type=reference("Patient")),
            element("ImagingStudy.endpoint", min=1),
            element("ImagingStudy.series", min=1),
            element("ImagingStudy.series.instance", min=1),
        ],
        constraints=(
            invariant(
                "dbr-study-1",
                "numberOfInstances counts the instances listed",
                "numberOfInstances.empty() or numberOfInstances = series.instance.count()",
            ),
        ),
    )


def dermoscopic_media() -> dict[str, Any]:
    return profile(
        urls.DERMOSCOPIC_MEDIA,
        "Media",
        "DermBridge dermoscopic image",
        "One skin image (a DICOM VL Photographic or Dermoscopic Photography instance) as Media: its SOP "
        "Instance UID, its study, and a rendering of it.",
        [
            sliced("Media.identifier", "value", "system", min=1),
            element("Media.identifier:sopInstanceUid", min=1, max="1"),
            element("Media.identifier:sopInstanceUid.system", min=1, fixedUri=DICOM_UID_SYSTEM),
            element("Media.identifier:sopInstanceUid.value", min=1),
            element("Media.partOf", min=1, type=reference("ImagingStudy")),
            element("Media.type", min=1, patternCodeableConcept=MEDIA_TYPE_IMAGE),
            element("Media.modality", min=1),
            element("Media.subject", min=1, type=reference("Patient")),
            element("Media.content.url", min=1),
        ],
    )
