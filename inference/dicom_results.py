"""The AI results of one image as DICOM objects, for PACS and viewers (IHE AI Results, AIR), built with
highdicom:

- a **Segmentation** (PS3.3 A.51, BINARY) of the lesion the quality gate segmented (the mask the ABCD
  rule measures: ``inference.segmentation``), at the image's resolution, one segment: category SCT
  49755003 Morphologically Abnormal Structure (CID 7150), type SCT 52988006 Lesion (CID 7151 / 7159),
  the image's anatomic region; algorithm AUTOMATIC, family DCM 123104 Morphological Operations (CID
  7162): the lesion is found by image geometry, not by the network;
- a **Comprehensive 3D SR** Measurement Report (TID 1500) with one measurement group for the lesion:
  TID 1410 on the SEG's segment (TID 1501 on the image when no lesion was segmented); its tracking
  identifier the lesion (BodyStructure), finding SCT 52988006 Lesion, finding site the image's
  anatomic region and laterality (CID 244), the model as device observer and as TID 4019 algorithm
  identification (name, version, weights SHA-256 as a parameter); two NUMs per class, "Probability of
  <class>" in UCUM ``1`` (CID 7181 "no units": the FHIR risk result's unit), kept within 0.001-0.999
  like the FHIR value, and "Decision threshold for <class>" (the card's threshold: a probability reads
  positive at or above it, so a reader knows what the number means); for malignant and pre-malignant
  classes a qualitative evaluation "AI reading: <class>" = SCT 10828004 Positive / 42425007 Equivocal
  (the band just under the threshold) / 260385009 Negative (CID 250; a benign class gets none, as in
  FHIR); and the predicted diagnosis, SCT 439401001 Diagnosis = the class's SNOMED CT concept only for a
  clinical model.

Clinical meaning as in FHIR (``inference.findings``): a negative class is never a finding value (the
disease is named by the evaluation, its value is Negative); a demonstration model (card
``clinical_use: false``) writes no SNOMED CT disease at all (its diagnosis value is a DermBridge code
whose meaning says "demonstration model, not a diagnosis"), and both objects say DEMONSTRATION in the
series description, the algorithm name, the lesion's measurement group itself (its first qualitative
evaluation, "Intended use of this AI output" = "DEMONSTRATION model: not a diagnosis...", shown by a viewer
with the findings), a Comment of the report (TID 1500 qualitative evaluations) and the SEG's content
description and segment label.

An image without Pixel Spacing gets a SEG all the same: the SEG never carries the photograph's spacing
(``_without_spacing``) nor a Frame of Reference, so no Pixel Measures functional group is required of it
(tested: highdicom reads it, ``dcmdump -E`` parses it, the IOD check passes).

UIDs are derived from the image and the model (``derived_uid``: name-based), so a redelivered
event builds the same objects. The series are per source series and model: a lesion's SRs share one
series, its SEGs another.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from inference.findings import INDETERMINATE_READING, NEGATIVE, POSITIVE, SCORE_BOUNDS, predicted_outcome, reading
from inference.model_card import ModelCard, OutputClass
from inference.segmentation import Segmentation

MANUFACTURER = "DermBridge"
SCHEME = "99DERMBRIDGE"  # private coding scheme (PS3.3 8.8.3.1.2: "99" prefix), the FHIR side's urn:dermbridge codes
SCHEME_ITEM = hd.coding_schemes.CodingSchemeIdentificationItem(
    SCHEME, name="DermBridge AI result codes", responsible_organization="DermBridge"
)
LESION = codes.SCT.Lesion  # 52988006, as the BodyStructure's morphology
MORPHOLOGICALLY_ABNORMAL = codes.cid7150.MorphologicallyAbnormalStructure  # 49755003
DIAGNOSIS = hd.sr.CodedConcept("439401001", "SCT", "Diagnosis")  # as the FHIR predicted diagnosis' code
EQUIVOCAL = hd.sr.CodedConcept("42425007", "SCT", "Equivocal")
READINGS = {POSITIVE["code"]: codes.SCT.Positive, NEGATIVE["code"]: codes.SCT.Negative,
            INDETERMINATE_READING["code"]: EQUIVOCAL}  # fmt: skip
LATERALITY = {"L": codes.cid244.Left, "R": codes.cid244.Right, "B": codes.cid244.Bilateral}
NO_UNITS = codes.cid7181.NoUnits  # UCUM "1"
DERMOSCOPIC_PHOTOGRAPHY = hd.sr.CodedConcept("446078004", "SCT", "Dermoscopic photography")
IMAGING_PROCEDURE = codes.SCT.ImagingProcedure  # 363679005 (CID 100)
QUALITATIVE_EVALUATIONS = hd.sr.CodedConcept("C0034375", "UMLS", "Qualitative Evaluations")  # TID 1500 row 12
DEMO = "DEMONSTRATION, not for clinical use"
AI_OUTPUT_USE = hd.sr.CodedConcept("ai-output-use", SCHEME, "Intended use of this AI output")
DEMONSTRATION_OUTPUT = hd.sr.CodedConcept(
    "demonstration", SCHEME, "DEMONSTRATION model: not a diagnosis, not for clinical use"
)
SR_SERIES, SEG_SERIES = 1000, 2000  # added to the source's SeriesNumber
DICOM_SR_EXTENSION = "urn:dermbridge:dicom-sr"  # a result Observation's link to its SR (dicom_output)
UID_NAMESPACE = uuid.UUID("6d1f3c52-3b9e-5b7a-9a8e-2f6b1e0c4d21")  # DermBridge's AI result objects


@dataclass(frozen=True, slots=True)
class TrackedLesion:
    """The lesion as TID 1500 tracks it: Tracking Identifier (for people) and Tracking UID."""

    label: str
    uid: str


@dataclass(frozen=True, slots=True)
class AiResultObjects:
    """The SR and (when a lesion was segmented) the SEG of one image's analysis by one model."""

    sr: Dataset
    seg: Dataset | None


def derived_uid(*parts: str) -> str:
    """A UID made from names (PS3.5 B.2: "2.25." and the decimal of a UUID, here a name-based UUID v5), so
    the same image and model give the same UIDs. (pydicom's ``generate_uid`` ignores its entropy sources
    without a prefix: a random UUID.)"""
    return f"2.25.{uuid.uuid5(UID_NAMESPACE, chr(31).join(parts)).int}"


def _uid(source: Dataset, card: ModelCard, part: str) -> str:
    return derived_uid(str(source.SOPInstanceUID), card.key, part)


def _series_uid(source: Dataset, card: ModelCard, part: str) -> str:
    return derived_uid(str(source.SeriesInstanceUID), card.key, part)


def _meaning(text: str) -> str:
    return text if len(text) <= 64 else text[:61] + "..."  # LO: 64 characters (ASCII: any character set holds it)


def _private(code: str, meaning: str) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(code, SCHEME, _meaning(meaning))


def _labelled(card: ModelCard, text: str) -> str:
    return text if card.clinical_use else f"{text} ({DEMO})"


def _series_description(card: ModelCard, what: str) -> str:
    return _meaning(f"{what}: {card.name} {card.version}" if card.clinical_use else f"{what}: {DEMO}")


def _algorithm(card: ModelCard, weights_sha256: str) -> hd.sr.AlgorithmIdentification:
    """TID 4019: the model's name, version and the SHA-256 of its weights (other weights, another model)."""
    parameters = [f"weights SHA-256: {weights_sha256}"] if weights_sha256 else None
    return hd.sr.AlgorithmIdentification(_labelled(card, card.name), card.version, parameters=parameters)


def _device(card: ModelCard, weights_sha256: str) -> hd.sr.ObservationContext:
    """The model as the report's device observer (TID 1004)."""
    uid = derived_uid("device", card.key, weights_sha256)
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=uid, name=_labelled(card, card.name), manufacturer_name=MANUFACTURER, model_name=card.key[:64]
    )
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(codes.DCM.Device, device),
    )


def finding_site(source: Dataset) -> hd.sr.FindingSite | None:
    """The image's Anatomic Region Sequence item with its laterality (ImageLaterality, else Laterality)."""
    regions = source.get("AnatomicRegionSequence") or []
    if not regions:
        return None
    try:
        site = hd.sr.CodedConcept.from_dataset(regions[0])
    except (AttributeError, TypeError, ValueError):  # an incomplete code item: no site rather than a wrong one
        return None
    side = str(source.get("ImageLaterality") or source.get("Laterality") or "").strip().upper()
    return hd.sr.FindingSite(site, laterality=LATERALITY.get(side))


def _score(value: float) -> float:
    """Within the bounds the FHIR result uses: an uncalibrated softmax score is never 0 or 1."""
    low, high = SCORE_BOUNDS
    return round(min(max(float(value), low), high), 6)


def _measurements(card: ModelCard, probabilities: list[float]) -> list[hd.sr.Measurement]:
    """Per class its probability, then the model's decision threshold for it: a probability means
    "positive" only at or above that threshold (a 0.4 under a 0.3 threshold is a positive reading)."""
    measured = []
    for c in card.classes:
        measured += [
            hd.sr.Measurement(name=_private(f"probability-of-{c.code}", f"Probability of {c.display}"),
                              value=_score(probabilities[c.index]), unit=NO_UNITS),
            hd.sr.Measurement(name=_private(f"threshold-of-{c.code}", f"Decision threshold for {c.display}"),
                              value=round(float(c.threshold), 6), unit=NO_UNITS),
        ]  # fmt: skip
    return measured


def _diagnosis_value(card: ModelCard, output: OutputClass, indeterminate: bool) -> hd.sr.CodedConcept:
    if not card.clinical_use:  # never a SNOMED CT disease from a demonstration model
        kind = "equivocal" if indeterminate else output.code
        return _private(f"demo-{kind}", f"{'Equivocal' if indeterminate else output.display} (demo model, "
                                        "not a diagnosis)")  # fmt: skip
    if indeterminate:
        return EQUIVOCAL
    return hd.sr.CodedConcept(output.code, "SCT", _meaning(output.display))


def _evaluations(card: ModelCard, probabilities: list[float]) -> list[hd.sr.QualitativeEvaluation]:
    """A demonstration model's label first (in the group, where a viewer shows it with the findings); per
    malignant or pre-malignant class, the reading of its score against its threshold (the disease named in
    the concept, never as a value); then the predicted diagnosis, if any."""
    evaluations = [] if card.clinical_use else [hd.sr.QualitativeEvaluation(AI_OUTPUT_USE, DEMONSTRATION_OUTPUT)]
    evaluations += [
        hd.sr.QualitativeEvaluation(
            _private(f"reading-of-{c.code}", f"AI reading: {c.display}"),
            READINGS[reading(card, c, float(probabilities[c.index]))["code"]],
        )
        for c in card.classes
        if card.concerning(c.risk_tier)
    ]
    outcome = predicted_outcome(card, probabilities)
    if outcome is not None:
        value = _diagnosis_value(card, outcome.output, outcome.indeterminate)
        evaluations.append(hd.sr.QualitativeEvaluation(DIAGNOSIS, value))
    return evaluations


def full_mask(segmentation: Segmentation, rows: int, columns: int) -> np.ndarray:
    """The lesion mask of the working copy at the image's own size (nearest neighbour)."""
    small = Image.fromarray(segmentation.lesion.astype(np.uint8) * 255)
    return np.asarray(small.resize((columns, rows), Image.Resampling.NEAREST)) > 127


def _equipment(card: ModelCard, server_version: str, weights_sha256: str) -> dict[str, object]:
    return {
        "manufacturer": MANUFACTURER,
        "manufacturer_model_name": _meaning(f"{card.name} {card.version}"),
        "software_versions": [f"DermBridge {server_version}".strip(), f"{card.id} {card.version}"],
        "device_serial_number": (weights_sha256 or card.key)[:64],
    }


SPACINGS = frozenset({"PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing"})


def _without_spacing(source: Dataset) -> Dataset:
    """The image as the SEG's source, without its Pixel Spacing: highdicom would copy it into a Pixel
    Measures Sequence without Slice Thickness (right for a photograph: PS3.3 C.7.6.16.2.1, type 1C for
    volumes only) which its own reader (segread) then refuses. The mask's pixels are the image's, whose
    spacing a viewer reads from the image."""
    copy = Dataset()  # the elements shared, the source itself unchanged
    for element in source:
        if element.keyword not in SPACINGS:
            copy.add(element)
    copy.file_meta = source.file_meta
    return copy


def build_segmentation(source: Dataset, card: ModelCard, mask: np.ndarray, server_version: str,
                       weights_sha256: str, lesion: TrackedLesion) -> Dataset:  # fmt: skip
    """The BINARY SEG of the lesion, referencing the image (PS3.3 A.51)."""
    site = finding_site(source)
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=_meaning(_labelled(card, "Lesion")),
        segmented_property_category=MORPHOLOGICALLY_ABNORMAL,
        segmented_property_type=LESION,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name="DermBridge lesion segmentation (image geometry)", version="1",
            family=codes.cid7162.MorphologicalOperations,
        ),
        tracking_uid=lesion.uid,
        tracking_id=_meaning(lesion.label),
        anatomic_regions=[site.value] if site is not None else None,
    )  # fmt: skip
    equipment = _equipment(card, server_version, weights_sha256)
    seg = hd.seg.Segmentation(
        source_images=[_without_spacing(source)],
        pixel_array=mask[np.newaxis].astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=_series_uid(source, card, "seg"),
        series_number=int(source.get("SeriesNumber") or 0) + SEG_SERIES,
        sop_instance_uid=_uid(source, card, "seg"),
        instance_number=int(source.get("InstanceNumber") or 1),
        content_label="LESION",
        content_description=_meaning(_labelled(card, "AI analysis: lesion mask")),
        content_creator_name=None,
        series_description=_series_description(card, "AI lesion segmentation"),
        omit_empty_frames=False,
        **equipment,  # type: ignore[arg-type]
    )
    return seg


def _group(source: Dataset, card: ModelCard, seg: Dataset | None, probabilities: list[float],
           weights_sha256: str, lesion: TrackedLesion) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations | \
        hd.sr.MeasurementsAndQualitativeEvaluations:  # fmt: skip
    algorithm = _algorithm(card, weights_sha256)
    site = finding_site(source)
    common = {
        "tracking_identifier": hd.sr.TrackingIdentifier(uid=lesion.uid, identifier=lesion.label),
        "finding_type": LESION,
        "algorithm_id": algorithm,
        "finding_sites": [site] if site is not None else None,
        "measurements": _measurements(card, probabilities),
        "qualitative_evaluations": _evaluations(card, probabilities),
    }  # fmt: skip
    image = hd.sr.SourceImageForSegmentation(str(source.SOPClassUID), str(source.SOPInstanceUID))
    if seg is not None:
        segment = hd.sr.ReferencedSegmentationFrame(str(seg.SOPClassUID), str(seg.SOPInstanceUID), 1, 1, image)
        return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(referenced_segment=segment, **common)
    source_image = hd.sr.SourceImageForMeasurementGroup(str(source.SOPClassUID), str(source.SOPInstanceUID))
    return hd.sr.MeasurementsAndQualitativeEvaluations(source_images=[source_image], **common)


def build_report(source: Dataset, card: ModelCard, probabilities: list[float], seg: Dataset | None,
                 server_version: str, weights_sha256: str, lesion: TrackedLesion) -> Dataset:  # fmt: skip
    """The TID 1500 Measurement Report of the image's analysis (Comprehensive 3D SR, PS3.3 A.35.13)."""
    dermoscopy = str(source.get("Modality", "")) == "DMS"
    report = hd.sr.MeasurementReport(
        observation_context=_device(card, weights_sha256),
        procedure_reported=DERMOSCOPIC_PHOTOGRAPHY if dermoscopy else IMAGING_PROCEDURE,
        # no Image Library: highdicom's knows no VL photographic SOP classes; the measurement group
        # references the image (and the SEG), and the evidence sequence lists both
        imaging_measurements=[_group(source, card, seg, probabilities, weights_sha256, lesion)],
    )
    content = report[0]
    if not card.clinical_use:  # TID 1500 row 12: Qualitative Evaluations, a TEXT any reader shows
        evaluations = hd.sr.ContainerContentItem(QUALITATIVE_EVALUATIONS, relationship_type="CONTAINS")
        evaluations.ContentSequence = hd.sr.ContentSequence([hd.sr.TextContentItem(
            codes.DCM.Comment, f"{DEMO}: output of a demonstration model (trained on synthetic images, no "
            "clinical validation); not a diagnosis.", relationship_type="CONTAINS")])  # fmt: skip
        content.ContentSequence.append(evaluations)
    equipment = _equipment(card, server_version, weights_sha256)
    return hd.sr.Comprehensive3DSR(
        evidence=[source, *([seg] if seg is not None else [])],
        content=content,
        series_instance_uid=_series_uid(source, card, "sr"),
        series_number=int(source.get("SeriesNumber") or 0) + SR_SERIES,
        sop_instance_uid=_uid(source, card, "sr"),
        instance_number=int(source.get("InstanceNumber") or 1),
        manufacturer=MANUFACTURER,
        is_complete=True,
        coding_schemes=[SCHEME_ITEM],
        series_description=_series_description(card, "AI results"),
        manufacturer_model_name=equipment["manufacturer_model_name"],
        software_versions=equipment["software_versions"],
        device_serial_number=equipment["device_serial_number"],
    )


def build(source: Dataset, card: ModelCard, probabilities: list[float], segmentation: Segmentation | None, *,
          server_version: str, weights_sha256: str, lesion: str, lesion_key: str) -> AiResultObjects:  # fmt: skip
    """The SR (and SEG, when the lesion was segmented) of one image's analysis by one model; ``lesion``
    names the lesion for people, ``lesion_key`` identifies it (its BodyStructure id: one Tracking UID for
    every report on the lesion, across images and visits)."""
    tracked = TrackedLesion(lesion, derived_uid("lesion", lesion_key))
    seg = None
    if segmentation is not None:
        mask = full_mask(segmentation, int(source.Rows), int(source.Columns))
        if mask.any():
            seg = build_segmentation(source, card, mask, server_version, weights_sha256, tracked)
    sr = build_report(source, card, probabilities, seg, server_version, weights_sha256, tracked)
    for derived in (sr, seg):
        if derived is not None:
            carry_context(source, derived)
    return AiResultObjects(sr, seg)


CARRIED = ("IssuerOfPatientID", "IssuerOfPatientIDQualifiersSequence", "StudyDescription", "TimezoneOffsetFromUTC")


def carry_context(source: Dataset, derived: Dataset) -> None:
    """Patient and study attributes of the image that highdicom does not copy (PS3.3 C.7.1.1, C.7.2.1): a
    PACS files the objects with the images and their patient."""
    for keyword in CARRIED:
        if keyword in source and keyword not in derived:
            derived[keyword] = source[keyword]
