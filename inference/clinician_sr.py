"""The clinician's signed-off decision as a DICOM SR, for the PACS (IHE AI Results: the AI's SR is
preliminary, this one carries what was signed): a Comprehensive 3D SR Measurement Report (TID 1500) built
with highdicom, in the study of the images, as a new series.

- Observer context (TID 1002): the reviewer as the person observer; Verification Flag VERIFIED with the
  reviewer in the Verifying Observer Sequence (PS3.3 C.17.2: "attested by a Verifying Observer who is
  accountable"), Completion COMPLETE, Preliminary Flag FINAL.
- One measurement group (TID 1501) per lesion the clinician decided on: Tracking Identifier and the same
  Tracking UID as the AI's SR of that lesion (``dicom_results``: derived from the BodyStructure), finding
  SCT 52988006 Lesion, the lesion's site, the key images as source images, and qualitative evaluations:
  SCT 439401001 Diagnosis = the clinician's SNOMED CT diagnosis (a clinician's, never the AI's), the
  clinician's decision ("Confirmed the AI result" / "Overrode the AI result: the clinician disagreed" /
  "Clinician's own diagnosis (same as the AI's)" / "... (AI was a demonstration)" / "... (no AI result for
  the lesion)") and, for a demonstration model, a
  qualitative evaluation saying the AI output was a DEMONSTRATION model's, not used as a diagnosis.
- TID 1500 row 12 "Qualitative Evaluations" at the root: TEXT items a viewer shows as the report's text:
  who signed off and when, the report's conclusion, each lesion's decision in words, and which AI SR
  (SOP Instance UID) it confirms or overrides. The AI SRs are listed in the evidence (Current Requested
  Procedure Evidence Sequence) beside the key images.
- A Key Object Selection document (``build_key_images``, PS3.3 A.35.4) in a series of its own: the key images
  of the decided lesions and the signed-off SR, title DCM 113000 "Of Interest", the reviewer as observer, so
  that a PACS flags the images the diagnosis rests on.
"""

from __future__ import annotations

from dataclasses import dataclass

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from inference.dicom_results import (
    DEMONSTRATION_OUTPUT,
    DERMOSCOPIC_PHOTOGRAPHY,
    DIAGNOSIS,
    IMAGING_PROCEDURE,
    LESION,
    MANUFACTURER,
    QUALITATIVE_EVALUATIONS,
    SCHEME,
    SCHEME_ITEM,
    carry_context,
    derived_uid,
)

SIGN_OFF_SERIES = 9000  # one series per study for its signed-off reports (the AI's: source + 1000, + 2000)
DECISION = hd.sr.CodedConcept("clinician-decision", SCHEME, "Clinician decision on the AI result")
CONFIRMED = hd.sr.CodedConcept("confirmed-ai", SCHEME, "Confirmed the AI result")
OVERRODE = hd.sr.CodedConcept("overrode-ai", SCHEME, "Overrode the AI result: the clinician disagreed")
OWN_SAME = hd.sr.CodedConcept("own-same-as-ai", SCHEME, "Clinician's own diagnosis (same as the AI's)")
AI_OUTPUT_USE = hd.sr.CodedConcept("ai-output-use", SCHEME, "Intended use of this AI output")
NO_AI = hd.sr.CodedConcept("no-ai-result", SCHEME, "Clinician's own diagnosis (no AI result for the lesion)")
OWN_DEMO = hd.sr.CodedConcept("own-demo-ai", SCHEME, "Clinician's own diagnosis (AI was a demonstration)")
URGENCY = hd.sr.CodedConcept("referral-urgency", SCHEME, "Referral urgency")
WORDS = {
    CONFIRMED.value: "confirmed the AI result",
    OVERRODE.value: "overrode the AI result (the clinician disagreed with it)",
    OWN_SAME.value: "recorded their own diagnosis, the same as the AI's",
    NO_AI.value: "recorded their own diagnosis (the AI gave no result for this lesion)",
    OWN_DEMO.value: "recorded their own diagnosis (the AI's output was a demonstration, not a diagnosis)",
}


@dataclass(frozen=True, slots=True)
class Instance:
    """A stored object by its UIDs (an index record): the evidence an SR lists."""

    study: str
    series: str
    sop_class: str
    sop_instance: str

    def dataset(self) -> Dataset:
        ds = Dataset()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = self.study, self.series
        ds.SOPClassUID, ds.SOPInstanceUID = self.sop_class, self.sop_instance
        return ds


@dataclass(frozen=True, slots=True)
class LesionDecision:
    lesion_key: str  # the BodyStructure id: the Tracking UID's name, as for the AI's SR
    label: str  # the lesion for people
    diagnosis: hd.sr.CodedConcept  # the clinician's (SNOMED CT)
    decision: hd.sr.CodedConcept  # CONFIRMED / OVERRODE / OWN_SAME / NO_AI
    site: hd.sr.FindingSite | None = None
    urgency: str = ""
    note: str = ""
    demonstration: bool = False  # the AI output reviewed was a demonstration model's
    ai_reports: tuple[Instance, ...] = ()  # the AI SRs of the lesion
    images: tuple[Instance, ...] = ()  # the key images


@dataclass(frozen=True, slots=True)
class SignOff:
    report_id: str  # the DiagnosticReport
    content_key: str  # what was signed (status, version of the decision): a new signing, a new SR
    reviewer: str  # a DICOM PN (Family^Given)
    organization: str
    signed_at: str  # for people
    conclusion: str
    lesions: tuple[LesionDecision, ...]


def _text(meaning: str, text: str) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(
        hd.sr.CodedConcept(meaning, SCHEME, meaning.replace("-", " ").capitalize()),
        text[:1024],
        relationship_type="CONTAINS",
    )


def _group(lesion: LesionDecision) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    evaluations = [
        hd.sr.QualitativeEvaluation(DIAGNOSIS, lesion.diagnosis),
        hd.sr.QualitativeEvaluation(DECISION, lesion.decision),
    ]
    if lesion.demonstration:
        evaluations.append(hd.sr.QualitativeEvaluation(AI_OUTPUT_USE, DEMONSTRATION_OUTPUT))
    if lesion.urgency:
        urgency = hd.sr.CodedConcept(lesion.urgency, SCHEME, lesion.urgency)
        evaluations.append(hd.sr.QualitativeEvaluation(URGENCY, urgency))
    sources = [hd.sr.SourceImageForMeasurementGroup(i.sop_class, i.sop_instance) for i in lesion.images]
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=derived_uid("lesion", lesion.lesion_key), identifier=lesion.label[:64]
        ),
        finding_type=LESION,
        finding_sites=[lesion.site] if lesion.site is not None else None,
        qualitative_evaluations=evaluations,
        source_images=sources or None,
    )


def lesion_words(lesion: LesionDecision) -> str:
    """One lesion's decision in words, naming the AI SR it confirms or overrides."""
    words = (
        f"{lesion.label}: diagnosis {lesion.diagnosis.meaning} (SNOMED CT {lesion.diagnosis.value}); the "
        f"clinician {WORDS[lesion.decision.value]}"
    )
    if lesion.demonstration:
        words += (
            "; the AI output came from a DEMONSTRATION model (not for clinical use, not a diagnosis) and "
            "the diagnosis here is the clinician's own"
        )
    if lesion.ai_reports:
        words += "; AI result SR " + ", ".join(r.sop_instance for r in lesion.ai_reports)
    if lesion.urgency:
        words += f"; referral urgency {lesion.urgency}"
    return words + (f". Note: {lesion.note}" if lesion.note else ".")


def _summary(sign_off: SignOff) -> hd.sr.ContainerContentItem:
    """TID 1500 row 12: the report's text, where any SR viewer shows it."""
    texts = [
        _text(
            "signed-off-by",
            f"Signed off by {sign_off.reviewer.replace('^', ' ').strip()} on {sign_off.signed_at} (verified, final)",
        )
    ]
    if sign_off.conclusion:
        texts.append(_text("conclusion", sign_off.conclusion))
    texts += [_text("lesion-decision", lesion_words(lesion)) for lesion in sign_off.lesions]
    if not sign_off.lesions:
        texts.append(_text("lesion-decision", "The report was signed off without per-lesion findings."))
    container = hd.sr.ContainerContentItem(QUALITATIVE_EVALUATIONS, relationship_type="CONTAINS")
    container.ContentSequence = hd.sr.ContentSequence(texts)
    return container


def build_sign_off_report(source: Dataset, sign_off: SignOff, server_version: str) -> Dataset:
    """The signed-off decision as a verified, final TID 1500 report in ``source``'s study."""
    person = hd.sr.PersonObserverIdentifyingAttributes(
        name=sign_off.reviewer, organization_name=sign_off.organization[:64] or None
    )
    context = hd.sr.ObservationContext(observer_person_context=hd.sr.ObserverContext(codes.DCM.Person, person))
    dermoscopy = str(source.get("Modality", "")) == "DMS"
    report = hd.sr.MeasurementReport(
        observation_context=context,
        procedure_reported=DERMOSCOPIC_PHOTOGRAPHY if dermoscopy else IMAGING_PROCEDURE,
        imaging_measurements=[_group(lesion) for lesion in sign_off.lesions] or None,
    )
    content = report[0]
    content.ContentSequence.append(_summary(sign_off))
    study = str(source.StudyInstanceUID)
    evidence = [source] + [
        i.dataset()
        for lesion in sign_off.lesions
        for i in (*lesion.images, *lesion.ai_reports)
        if i.sop_instance != source.SOPInstanceUID
    ]
    unique = list({str(ds.SOPInstanceUID): ds for ds in evidence}.values())
    sr = hd.sr.Comprehensive3DSR(
        evidence=unique,
        content=content,
        series_instance_uid=derived_uid(study, "clinician-sign-off"),
        series_number=SIGN_OFF_SERIES,
        sop_instance_uid=derived_uid(study, sign_off.report_id, sign_off.content_key, "clinician-sign-off"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=True,
        is_verified=True,
        verifying_observer_name=sign_off.reviewer,
        verifying_organization=sign_off.organization[:64] or "not recorded",
        coding_schemes=[SCHEME_ITEM],
        series_description="Clinician review: signed-off diagnosis",
        manufacturer_model_name="DermBridge clinician review",
        software_versions=[f"DermBridge {server_version}".strip()],
        device_serial_number="clinician-review",
    )
    carry_context(source, sr)
    return sr


def build_key_images(source: Dataset, sign_off: SignOff, report: Dataset) -> Dataset | None:
    """The Key Object Selection (PS3.3 A.35.4, TID 2010) of the signed-off decision: title DCM 113000 "Of
    Interest", the reviewer as observer, the lesions' key images and the signed-off SR (``report``); None when
    no lesion has an image on record."""
    images = {i.sop_instance: i for lesion in sign_off.lesions for i in lesion.images}
    if not images:
        return None
    referenced = [source if uid == source.SOPInstanceUID else i.dataset() for uid, i in images.items()]
    person = hd.sr.PersonObserverIdentifyingAttributes(name=sign_off.reviewer)
    content = hd.ko.KeyObjectSelection(
        document_title=codes.DCM.OfInterest,
        referenced_objects=[*referenced, report],
        observer_person_context=hd.sr.ObserverContext(codes.DCM.Person, person),
        description=f"Key images of the signed-off diagnosis (DiagnosticReport/{sign_off.report_id})"[:1024],
    )
    study = str(source.StudyInstanceUID)
    kos = hd.ko.KeyObjectSelectionDocument(
        evidence=[*referenced, report],
        content=content,
        series_instance_uid=derived_uid(study, "clinician-key-images"),
        series_number=SIGN_OFF_SERIES + 1,
        sop_instance_uid=derived_uid(study, sign_off.report_id, sign_off.content_key, "clinician-key-images"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        series_description="Clinician review: key images",
    )
    carry_context(source, kos)
    return kos
