"""Admission: what a model may see (DESIGN data flow 2, the admission check).

The model card declares the inputs it was built for (``AcceptedInputs``: SOP classes, modalities,
photometric interpretations, body regions, minimum resolution). Body regions match by hierarchy
(``inference.body_regions``): a nail unit of a thumb is refused by a card that excludes the nail unit,
and accepted by a card that takes nail units. An image outside them, or one that
fails the pixel checks of ``inference.quality`` (exposure, focus, skin, lesion), is not scored: the
case gets an "unsuitable image" outcome instead: one Task per image (a clinician-review request, or a
``rejected`` AI-analysis Task when the tenant has no human review) whose ``statusReason`` and
``output`` carry the coded reasons (``urn:dermbridge:image-admission``). The model card's
contraindications beyond DICOM attribute values (the patient's age, clinical overview photographs)
are ``inference.contraindications``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom import Dataset
from pydicom.uid import UID

from dicom_node.sop_classes import AI_RESULT_CLASSES
from fhir_server.repository import Repository, Stored
from inference.accepted_inputs import AcceptedInputs
from inference.body_regions import excluding, meaning
from inference.contraindications import age_problem, kind_problem
from inference.quality import QualityReport, inspect
from inference.results import ImageContext
from inference.tasks import AI_ANALYSIS_CODE, HUMAN_REVIEW_CODE, REFUSED, _task, _task_once

ADMISSION_SYSTEM = "urn:dermbridge:image-admission"
SCT = "SCT"  # DICOM's coding scheme designator for SNOMED CT
REASONS = {
    "sop-class": "The image's SOP class is not one the model accepts",
    "modality": "The image's modality is not one the model accepts",
    "photometric": "The image's photometric interpretation is not one the model accepts",
    "body-region": "The imaged body region is not one the model accepts",
    "resolution": "The image is smaller than the model's minimum resolution",
    "under-exposed": "Under-exposed image",
    "over-exposed": "Over-exposed image",
    "blurred": "Blurred (out of focus) image",
    "no-skin": "No skin in the image (not a dermoscopic image of skin)",
    "no-lesion": "No lesion found in the image",
    "patient-age": "The patient's age is contraindicated for the model",
    "not-dermoscopy": "Not a dermoscopic image (the model is for dermoscopy)",
}


@dataclass(frozen=True, slots=True)
class Unsuitable:
    code: str  # a key of REASONS
    detail: str

    def concept(self) -> dict[str, Any]:
        return {"coding": [{"system": ADMISSION_SYSTEM, "code": self.code, "display": REASONS[self.code]}],
                "text": f"{REASONS[self.code]}: {self.detail}"}  # fmt: skip


def _regions(ds: Dataset) -> list[str]:
    return [str(item.get("CodeValue", "")) for item in ds.get("AnatomicRegionSequence", [])
            if str(item.get("CodingSchemeDesignator", "")) in (SCT, "SNOMED")]  # fmt: skip


def _excluded(region: str, accepts: AcceptedInputs) -> str:
    """Why a region is refused: it is, or lies within, a region the card excludes (``body_regions``)."""
    code = excluding(region, accepts.excluded_body_regions)
    named = f"SNOMED CT {region} {meaning(region)}".rstrip()
    if code == region:
        return f"{named} is contraindicated for the model"
    return f"{named} lies within {code} {meaning(str(code))}, contraindicated for the model"


def check_attributes(ds: Dataset, accepts: AcceptedInputs, patient_birth_date: str | None = None) -> list[Unsuitable]:
    """What in the image's DICOM attributes (and the patient's age: ``patient_birth_date`` from the
    matched FHIR Patient, else the image's) the card does not accept."""
    problems = []
    age = age_problem(ds, accepts, patient_birth_date)
    if age is not None:
        problems.append(Unsuitable("patient-age", age))
    sop_class, modality = str(ds.get("SOPClassUID", "")), str(ds.get("Modality", ""))
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if sop_class in AI_RESULT_CLASSES:  # whatever a card accepts: the AI never analyses its own results
        problems.append(Unsuitable("sop-class", f"{AI_RESULT_CLASSES[UID(sop_class)]} holds AI results, not an image"))
    elif accepts.sop_classes and sop_class not in accepts.sop_classes:
        problems.append(Unsuitable("sop-class", f"{sop_class or 'none'} is not in {', '.join(accepts.sop_classes)}"))
    if accepts.modalities and modality not in accepts.modalities:
        problems.append(Unsuitable("modality", f"{modality or 'none'} is not in {', '.join(accepts.modalities)}"))
    if accepts.photometric_interpretations and photometric not in accepts.photometric_interpretations:
        taken = ", ".join(accepts.photometric_interpretations)
        problems.append(Unsuitable("photometric", f"{photometric or 'none'} is not one the model takes ({taken})"))
    regions = _regions(ds)
    excluded = [_excluded(r, accepts) for r in regions if excluding(r, accepts.excluded_body_regions)]
    if excluded:
        problems.append(Unsuitable("body-region", "; ".join(excluded)))
    elif accepts.body_regions and regions and not any(excluding(r, accepts.body_regions) for r in regions):
        problems.append(Unsuitable("body-region", f"SNOMED CT {', '.join(regions)} is not a region the model takes"))
    rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if rows < accepts.min_rows or columns < accepts.min_columns:
        problems.append(Unsuitable("resolution", f"{columns} x {rows} pixels, the model needs at least "
                                                 f"{accepts.min_columns} x {accepts.min_rows}"))  # fmt: skip
    return problems


def admit(
    ds: Dataset,
    rgb: np.ndarray,
    accepts: AcceptedInputs,
    patient_birth_date: str | None = None,
    quality: QualityReport | None = None,
) -> list[Unsuitable]:
    """Why the image must not be scored by a model accepting ``accepts``; empty: it may be.
    ``quality``: the pixel checks already run on ``rgb`` (``inference.quality.inspect``), not run again."""
    problems = check_attributes(ds, accepts, patient_birth_date)
    kind = kind_problem(ds, rgb, accepts)
    if kind is not None:
        problems.append(Unsuitable("not-dermoscopy", kind))
    if problems or not accepts.quality_check:
        return problems
    report = quality if quality is not None else inspect(rgb)
    return [Unsuitable(p.code, p.detail) for p in report.problems]


async def record_unsuitable(
    repo: Repository, context: ImageContext, model: str, problems: list[Unsuitable], *, review: bool = True
) -> Stored:
    """The case's "unsuitable image" outcome, one Task per image with the coded reasons in plain words:
    a clinician-review request when the tenant's flow has human review (the lesion needs a clinician's
    eyes without AI), else a rejected AI-analysis Task."""
    summary = "; ".join(f"{REASONS[p.code]} ({p.detail})" for p in problems)
    reason = f"{REFUSED}: image unsuitable for {model}: {summary}"
    status, code = ("requested", HUMAN_REVIEW_CODE) if review else ("rejected", AI_ANALYSIS_CODE)
    task = _task(context, status, code, reason)
    task["statusReason"] = {"coding": [c for p in problems for c in p.concept()["coding"]], "text": reason}
    task["businessStatus"] = {"coding": [{"system": ADMISSION_SYSTEM, "code": "unsuitable-image",
                                          "display": "Unsuitable image: not analysed"}]}  # fmt: skip
    task["output"] = [{"type": {"coding": [{"system": ADMISSION_SYSTEM, "code": "reason"}], "text": "reason"},
                       "valueCodeableConcept": p.concept()} for p in problems]  # fmt: skip
    key = f"review-{context.instance_uid}" if review else f"unsuitable-{context.instance_uid}-{model}"
    return await _task_once(repo, task, key)
