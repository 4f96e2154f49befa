"""The clinician's signed-off decision as a DICOM SR, for the PACS (IHE AI Results: the AI's SR is
preliminary, this one carries what was signed): a Comprehensive 3D SR Measurement Report (TID 1500) built
with highdicom, in the study of the images, as a new series.

- Observer context (TID 1002): the reviewer as the person observer; Verification Flag VERIFIED with the
  reviewer in the Verifying Observer Sequence (PS3.3 C.17.2: "attested by a Verifying Observer who is
  accountable"), the Verification DateTime (with its UTC offset) and Content Date/Time when they signed,
  Completion COMPLETE, Preliminary Flag FINAL.
- One measurement group (TID 1501) per lesion the clinician decided on: Tracking Identifier and the same
  Tracking UID as the AI's SR of that lesion (``dicom_results``: derived from the BodyStructure), finding
  SCT 52988006 Lesion, the lesion's site, the key images as source images, and qualitative evaluations:
  SCT 439401001 Diagnosis = the clinician's SNOMED CT diagnosis (a clinician's, never the AI's), the
  clinician's decision ("Confirmed the AI result" / "Overrode the AI result: the clinician disagreed" /
  "Clinician's own diagnosis (same as the AI's)" / "... (AI made no call)" / "... (AI result equivocal)" /
  "... (AI results differed)" / "... (no AI result for the lesion)" / "Own diagnosis; AI result shown for
  reference only" beside a demonstration model). The demonstration label is not in the lesion's group (a
  viewer showing values only would read it after the clinician's diagnosis) but in the report's text.
- TID 1500 row 12 "Qualitative Evaluations" at the root: TEXT items a viewer shows as the report's text:
  who signed off and when, the report's conclusion, each lesion's decision in words, and which AI SR
  (SOP Instance UID) it confirms or overrides. The AI SRs are listed in the evidence (Current Requested
  Procedure Evidence Sequence) beside the key images.
- An amended or corrected sign-off is a new SR in the report's own sign-off series (``sign_off_series``):
  Instance Number its version, the earlier SRs in the Predecessor Documents Sequence (PS3.3 C.17.2.3), and
  its text opens with "AMENDED"/"CORRECTED ... replaces the earlier SR <uid>" (derm review 4, H2).
- A Key Object Selection document (``build_key_images``, PS3.3 A.35.4) in a series of its own: the key images
  of the decided lesions and the signed-off SR, title DCM 113000 "Of Interest", the reviewer as observer, so
  that a PACS flags the images the diagnosis rests on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import partial

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.valuerep import PersonName

from inference.dicom_results import (
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

EQUIVOCAL = "42425007"  # SNOMED CT |Equivocal (qualifier value)|: no diagnosis, never signed as one
SIGN_OFF_SERIES = 9000  # one series per study for its signed-off reports (the AI's: source + 1000, + 2000)
DECISION = hd.sr.CodedConcept("clinician-decision", SCHEME, "Clinician decision on the AI result")
CONFIRMED = hd.sr.CodedConcept("confirmed-ai", SCHEME, "Confirmed the AI result")
OVERRODE = hd.sr.CodedConcept("overrode-ai", SCHEME, "Overrode the AI result: the clinician disagreed")
OWN_SAME = hd.sr.CodedConcept("own-same-as-ai", SCHEME, "Clinician's own diagnosis (same as the AI's)")
NO_AI = hd.sr.CodedConcept("no-ai-result", SCHEME, "Clinician's own diagnosis (no AI result for the lesion)")
OWN_DEMO = hd.sr.CodedConcept("own-demo-ai", SCHEME, "Own diagnosis; AI result shown for reference only")
AI_NO_CALL = hd.sr.CodedConcept("own-ai-no-call", SCHEME, "Clinician's own diagnosis (AI made no call)")
AI_EQUIVOCAL = hd.sr.CodedConcept("own-ai-equivocal", SCHEME, "Clinician's own diagnosis (AI result equivocal)")
CONSISTENT = hd.sr.CodedConcept("own-consistent-with-ai", SCHEME, "Clinician's own diagnosis, consistent with the AI's")
AI_MIXED = hd.sr.CodedConcept("own-ai-mixed", SCHEME, "Clinician's own diagnosis (AI results differed)")
URGENCY = hd.sr.CodedConcept("referral-urgency", SCHEME, "Referral urgency")
REQUEST_PRIORITY = ("routine", "urgent", "asap", "stat")  # HL7 request-priority, the review's referral urgency
UTF8 = "ISO_IR 192"  # the SR and KOS are UTF-8 whatever the image's character set: names and text as written (H1)
MAX_TEXT = 100_000  # characters of one TEXT item (UT: up to 2^32-2 bytes, PS3.5 6.2); longer is cut, and says so
WORDS = {
    CONFIRMED.value: "confirmed the AI result",
    OVERRODE.value: "overrode the AI result (the clinician disagreed with it)",
    OWN_SAME.value: "recorded their own diagnosis, the same as the AI's",
    NO_AI.value: "recorded their own diagnosis (the AI gave no result for this lesion)",
    OWN_DEMO.value: "recorded their own diagnosis; the AI result was shown for reference only",
    AI_NO_CALL.value: "recorded their own diagnosis (the AI made no call: no class above its threshold)",
    AI_EQUIVOCAL.value: "recorded their own diagnosis (the AI result was equivocal)",
    CONSISTENT.value: "recorded their own diagnosis, consistent with the AI's call (the same condition, at another "
    "level of detail: not a disagreement)",
    AI_MIXED.value: "recorded their own diagnosis (the AI's results for this lesion differed from each other)",
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
    imaged_elsewhere: bool = False  # its images are in another study of the case, not in this SR's
    gone: tuple[str, ...] = ()  # what the decision rested on and is no longer on record (a deleted image, an AI SR)


@dataclass(frozen=True, slots=True)
class SignOff:
    report_id: str  # the DiagnosticReport
    content_key: str  # what was signed (status, version of the decision): a new signing, a new SR
    reviewer: str  # a DICOM PN (Family^Given)
    organization: str  # the verifier's organisation by name ("" when not recorded), never a tenant id
    signed_at: str  # when the clinician signed (the report's ``issued``), an ISO 8601 date-time with its offset
    conclusion: str
    lesions: tuple[LesionDecision, ...]
    status: str = "final"  # the DiagnosticReport's: final, amended, corrected
    previous: tuple[Instance, ...] = ()  # the earlier sign-off SRs of the report in the study, oldest first
    version: int = 1  # the Instance Number: 1 for the first signing, then one more per amendment
    left_out: tuple[str, ...] = ()  # what the signed report holds and this SR does not: the SR is then PARTIAL
    signing_key: str = ""  # what the clinician signed, without what was deleted since: ``content_key`` of the signing
    reissued: str = ""  # the date DermBridge re-issued the SR for a deletion alone, the clinician signing nothing new
    undecided: tuple[str, ...] = ()  # in words: lesions of the AI results nobody decided on, withdrawn findings


def sign_off_series(study: str, report_id: str) -> str:
    """The series of one report's sign-off SRs in ``study``: every version of it, numbered (derm review 4, H2)."""
    return derived_uid(study, report_id, "clinician-sign-off")


def key_images_series(study: str) -> str:
    """The series of the signed-off decisions' Key Object Selections in ``study``."""
    return derived_uid(study, "clinician-key-images")


def sign_off_uid(study: str, sign_off: SignOff) -> str:
    """The SR of one signing: the same signing is the same SR, a new one (an amendment) a new SR."""
    return derived_uid(study, sign_off.report_id, sign_off.content_key, "clinician-sign-off")


def readable_name(pn: str) -> str:
    """A DICOM PN for people. The alphabetic group given name first ("Ann Smith" for ``Smith^Ann``: "Smith Ann"
    reads as a given name Smith); a name with an ideographic form (kanji) reads that form first, family name first
    as it is written ("山田 太郎"), the alphabetic form after it ("山田 太郎 (Taro Yamada)": derm review 5, H1;
    PS3.5 6.2.1.2)."""
    name = PersonName(pn)
    alphabetic = _name_words(PersonName(name.alphabetic), family_first=False) if name.alphabetic else ""
    ideographic = _name_words(PersonName(name.ideographic), family_first=True) if name.ideographic else ""
    if ideographic:
        return f"{ideographic} ({alphabetic})" if alphabetic else ideographic
    return alphabetic


def _name_words(group: PersonName, family_first: bool) -> str:
    family, given, middle = group.family_name, group.given_name, group.middle_name
    order = (family, given, middle) if family_first else (given, middle, family)
    return " ".join(p.strip() for p in (group.name_prefix, *order, group.name_suffix) if p.strip())


def _text(meaning: str, text: str, report_id: str = "") -> hd.sr.TextContentItem:
    """A TEXT item (its value UT: no 1024-character limit); a text over ``MAX_TEXT`` is cut and says so, never
    silently (final review dicom.md 4)."""
    if len(text) > MAX_TEXT:
        text = text[:MAX_TEXT] + f" ... (truncated; the full text is in DiagnosticReport/{report_id})"
    return hd.sr.TextContentItem(
        hd.sr.CodedConcept(meaning, SCHEME, meaning.replace("-", " ").capitalize()),
        text,
        relationship_type="CONTAINS",
    )


def _group(lesion: LesionDecision) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    evaluations = [
        hd.sr.QualitativeEvaluation(DIAGNOSIS, lesion.diagnosis),
        hd.sr.QualitativeEvaluation(DECISION, lesion.decision),
    ]
    if lesion.urgency in REQUEST_PRIORITY:  # coded when it is a code; as written only in the text otherwise
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
    if lesion.ai_reports:
        words += "; AI result SR " + ", ".join(r.sop_instance for r in lesion.ai_reports)
    if lesion.demonstration:  # qualifies the AI output only, never the clinician's diagnosis (derm review 4, M3)
        words += " (that AI output came from a DEMONSTRATION model: not for clinical use, and not used here)"
    if lesion.urgency:
        words += f"; referral urgency {lesion.urgency}"
    if lesion.imaged_elsewhere:  # derm review 4, M4: every lesion of the signed report, imaged here or not
        words += "; not imaged in this study (its images are in another study of the case)"
    elif not lesion.images:
        words += "; no image of this lesion on record"
    if lesion.gone:  # derm review 4, M7: the PACS user is told why a key image or an AI SR is missing
        words += "; " + "; ".join(lesion.gone)
    return words + (f". Note: {lesion.note}" if lesion.note else ".")


def _demonstration_words(ai_reports: list[str]) -> str:
    """The demonstration label, at report level: it qualifies the AI output reviewed, not the clinician's
    findings (derm review 4, M3)."""
    which = f" (SR {', '.join(sorted(set(ai_reports)))})" if ai_reports else ""
    return (
        f"The AI output reviewed{which} came from a DEMONSTRATION model: not for clinical use and not a diagnosis. "
        "The diagnoses in this report are the clinician's own."
    )


def _version_words(sign_off: SignOff) -> str:
    """What this version is: the clinician's amendment or correction, or DermBridge's re-issue after a deletion,
    the clinician having signed nothing new (derm review 5, M3: never "AMENDED" in their name)."""
    replaced = ", ".join(i.sop_instance for i in sign_off.previous)
    if sign_off.reissued:
        gone = sorted({g for lesion in sign_off.lesions for g in lesion.gone})
        why = "; ".join(gone) if gone else "an object it referenced was deleted"
        return (
            f"RE-ISSUED by DermBridge on {sign_off.reissued} (version {sign_off.version}), not by the clinician: "
            f"{why}. The clinician's findings and verification are unchanged; replaces the earlier SR {replaced}"
        )
    kind = "CORRECTED" if sign_off.status == "corrected" else "AMENDED"
    return f"{kind} (version {sign_off.version}): replaces the earlier SR {replaced}"


def _summary(sign_off: SignOff) -> hd.sr.ContainerContentItem:
    """TID 1500 row 12: the report's text, where any SR viewer shows it."""
    text = partial(_text, report_id=sign_off.report_id)
    texts = []
    if sign_off.left_out:  # derm review 4, M4: a PARTIAL SR says what it leaves out
        texts.append(text("left-out", "PARTIAL: this SR leaves out " + "; ".join(sign_off.left_out)))
    if sign_off.previous:  # derm review 4, H2: the PACS user is told which report is current
        texts.append(text("amendment", _version_words(sign_off)))
    who = readable_name(sign_off.reviewer)
    at = f" of {sign_off.organization}" if sign_off.organization else ""
    signed = f"Signed off by {who}{at} on {sign_off.signed_at} (verified, {sign_off.status})"
    texts.append(text("signed-off-by", signed))
    if sign_off.conclusion:
        texts.append(text("conclusion", sign_off.conclusion))
    demonstration = [r.sop_instance for lesion in sign_off.lesions if lesion.demonstration for r in lesion.ai_reports]
    if any(lesion.demonstration for lesion in sign_off.lesions):
        texts.append(text("ai-output-use", _demonstration_words(demonstration)))
    texts += [text("lesion-decision", lesion_words(lesion)) for lesion in sign_off.lesions]
    texts += [text("lesion-decision", words) for words in sign_off.undecided]  # derm review 5, H2
    if not sign_off.lesions:
        texts.append(text("lesion-decision", "The report was signed off without per-lesion findings."))
    container = hd.sr.ContainerContentItem(QUALITATIVE_EVALUATIONS, relationship_type="CONTAINS")
    container.ContentSequence = hd.sr.ContentSequence(texts)
    return container


def build_sign_off_report(source: Dataset, sign_off: SignOff, server_version: str) -> Dataset:
    """The signed-off decision as a verified, final TID 1500 report in ``source``'s study. ValueError when a
    lesion's "diagnosis" is SNOMED 42425007 Equivocal: a verified SR never states it as a diagnosis (derm review 4,
    H1); the exporter records the report as not exported."""
    for lesion in sign_off.lesions:
        if lesion.diagnosis.value == EQUIVOCAL:
            raise ValueError(f"{lesion.label}: Equivocal (SNOMED CT {EQUIVOCAL}) is not a diagnosis to sign off")
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
        series_instance_uid=sign_off_series(study, sign_off.report_id),
        series_number=SIGN_OFF_SERIES,
        sop_instance_uid=sign_off_uid(study, sign_off),
        instance_number=sign_off.version,
        previous_versions=[i.dataset() for i in sign_off.previous] or None,
        manufacturer=MANUFACTURER,
        is_complete=not sign_off.left_out,
        is_final=True,
        is_verified=True,
        verifying_observer_name=sign_off.reviewer,
        verifying_organization=sign_off.organization[:64] or "not recorded",  # Type 1 in highdicom
        coding_schemes=[SCHEME_ITEM],
        specific_character_set=UTF8,
        series_description="Clinician review: signed-off diagnosis",
        manufacturer_model_name="DermBridge clinician review",
        software_versions=[f"DermBridge {server_version}".strip()],
        device_serial_number="clinician-review",
    )
    carry_context(source, sr)
    _stamp_signing(sr, sign_off.signed_at)
    return sr


def _stamp_signing(sr: Dataset, signed_at: str) -> None:
    """Verification and content date/time are when the clinician signed (the report's ``issued``), not when the
    export ran (derm review 4, M5): VerificationDateTime a DT with its UTC offset (PS3.5 6.2, "&ZZXX"), in the
    study's TimezoneOffsetFromUTC when the images give one (PS3.3 C.12.1.1.8), else in UTC. ValueError when the
    signing time is missing or has no offset: the export time is never stamped as the attestation time (final
    review dicom.md 6); the exporter records the report as not exported, and why."""
    try:
        signed = datetime.fromisoformat(signed_at)
    except ValueError as exc:
        raise ValueError(f"the signing time {signed_at!r} is not a date-time (DiagnosticReport.issued)") from exc
    if signed.tzinfo is None:
        raise ValueError(f"the signing time {signed_at!r} has no UTC offset (DiagnosticReport.issued is an instant)")
    try:
        zone = datetime.strptime(str(sr.get("TimezoneOffsetFromUTC") or "+0000"), "%z").tzinfo or signed.tzinfo
    except ValueError:  # the images' offset is malformed: the signing time in UTC
        zone = signed.tzinfo
    local = signed.astimezone(zone)
    sr.VerifyingObserverSequence[0].VerificationDateTime = local.strftime("%Y%m%d%H%M%S%z")
    sr.ContentDate, sr.ContentTime = local.strftime("%Y%m%d"), local.strftime("%H%M%S")


def _key_images_words(sign_off: SignOff) -> str:
    words = f"Key images of the signed-off diagnosis (DiagnosticReport/{sign_off.report_id})"
    gone = sorted({g for lesion in sign_off.lesions for g in lesion.gone})
    return words + (f"; replaces the earlier key images: {'; '.join(gone)}" if gone else "")


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
        description=_key_images_words(sign_off)[:1024],
    )
    study = str(source.StudyInstanceUID)
    kos = hd.ko.KeyObjectSelectionDocument(
        evidence=[*referenced, report],
        content=content,
        series_instance_uid=key_images_series(study),
        series_number=SIGN_OFF_SERIES + 1,
        sop_instance_uid=derived_uid(study, sign_off.report_id, sign_off.content_key, "clinician-key-images"),
        instance_number=sign_off.version,
        manufacturer=MANUFACTURER,
        specific_character_set=UTF8,
        series_description="Clinician review: key images",
    )
    carry_context(source, kos)
    return kos
