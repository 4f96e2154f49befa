"""The model card's contraindications that are not a DICOM attribute value: the patient's age and
the kind of picture (see ``inference.admission``, which refuses the image with these reasons).

- **Age**: a card with ``min_age_years`` does not score an image of a patient younger than that at
  acquisition. The birth date comes from the FHIR Patient the image was matched to, else the image's
  PatientBirthDate (0010,0030), else its PatientAge (0010,1010, PS3.5 6.2 AS: ``nnnD/W/M/Y``); the
  acquisition date from AcquisitionDateTime, ContentDate or StudyDate. An unknown age is refused too:
  the card cannot be honoured without it.
- **Dermoscopy only**: a card with ``dermoscopy_only`` scores dermoscopy, not clinical overview
  photographs. Dermoscopic Photography Image Storage (1.2.840.10008.5.1.4.1.1.77.1.7, Modality
  ``DMS``, PS3.3 A.32.11) is dermoscopy by its IOD. A VL Photographic image (Modality ``XC``, external
  camera) is dermoscopy only when its pixels show a dermatoscope's round field of view: the four
  corners of the frame lie in the instrument's dark vignette.
"""

from __future__ import annotations

from datetime import date

import numpy as np
from pydicom import Dataset

from dicom_node.dicom_values import fhir_date
from dicom_node.sop_classes import DERMOSCOPIC_PHOTOGRAPHY
from inference.accepted_inputs import AcceptedInputs
from inference.segmentation import DARK, luminance, working_copy

AGE_UNITS_IN_YEARS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0}  # PS3.5 6.2 AS
CORNER = 3  # pixels a side of each corner patch checked for the vignette (at working size)


def _date(value: str | None) -> date | None:
    """A FHIR date (``YYYY``, ``YYYY-MM`` or ``YYYY-MM-DD``): a partial one as its first day."""
    if not value:
        return None
    parts = [*str(value)[:10].split("-"), "01", "01"][:3]
    try:
        return date(int(parts[0]), int(parts[1]), int(parts[2]))
    except ValueError:
        return None


def acquired_on(ds: Dataset) -> date | None:
    """The day the image was taken (AcquisitionDateTime, ContentDate, else StudyDate)."""
    for keyword in ("AcquisitionDateTime", "ContentDate", "StudyDate"):
        found = _date(fhir_date(str(ds.get(keyword) or "")[:8]))
        if found is not None:
            return found
    return None


def _years_between(born: date, on: date) -> float:
    whole = on.year - born.year - ((on.month, on.day) < (born.month, born.day))
    return float(whole)


def age_at_acquisition(ds: Dataset, patient_birth_date: str | None) -> float | None:
    """The patient's age in years when the image was taken, or None when it cannot be known."""
    on = acquired_on(ds)
    born = _date(patient_birth_date) or _date(fhir_date(ds.get("PatientBirthDate")))
    if born is not None and on is not None:
        return _years_between(born, on)
    text = str(ds.get("PatientAge") or "").strip().upper()
    if len(text) == 4 and text[:3].isdigit() and text[3] in AGE_UNITS_IN_YEARS:
        return int(text[:3]) * AGE_UNITS_IN_YEARS[text[3]]
    return None


def age_problem(ds: Dataset, accepts: AcceptedInputs, patient_birth_date: str | None) -> str | None:
    """Why the patient's age contraindicates the model (``accepts.min_age_years``), or None."""
    if not accepts.min_age_years:
        return None
    age = age_at_acquisition(ds, patient_birth_date)
    if age is None:
        return f"age at acquisition unknown (no birth date or PatientAge); model contraindicated under " \
               f"{accepts.min_age_years} years"  # fmt: skip
    if age >= accepts.min_age_years:
        return None
    shown = f"{int(age)} y" if age >= 1 else f"{int(age * 12)} months"
    return f"{shown} at acquisition, model contraindicated under {accepts.min_age_years} years"


def shows_dermatoscope_field(rgb: np.ndarray) -> bool:
    """The four corners of the frame are dark: a dermatoscope's round field of view, not a photograph
    of a body area (whose corners show skin, clothing or the room)."""
    small, _ = working_copy(rgb)
    light = luminance(small)
    corners = (light[:CORNER, :CORNER], light[:CORNER, -CORNER:], light[-CORNER:, :CORNER], light[-CORNER:, -CORNER:])
    return all(float(patch.mean()) < DARK for patch in corners)


def kind_problem(ds: Dataset, rgb: np.ndarray, accepts: AcceptedInputs) -> str | None:
    """Why the image is not dermoscopy for a ``dermoscopy_only`` card, or None."""
    if not accepts.dermoscopy_only or str(ds.get("SOPClassUID", "")) == DERMOSCOPIC_PHOTOGRAPHY:
        return None
    if shows_dermatoscope_field(rgb):
        return None
    modality = str(ds.get("Modality", "")) or "no modality"
    return (f"a {modality} photograph without a dermatoscope's field of view (a clinical overview photograph?); "
            "the model is for dermoscopy of a single lesion")  # fmt: skip
