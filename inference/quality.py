"""Image quality and out-of-distribution checks before a dermoscopy model may score an image.

In order, on the pixels alone (the DICOM attributes are ``inference.admission``'s business):

1. field of view: the dermatoscope's round field is found and everything outside it ignored;
   a frame that is mostly dark has none (under-exposed, or the lens capped);
2. exposure: the field's mean luminance, and the share of it clipped to white or crushed to black;
3. focus: the variance of the Laplacian of the luminance (Pech-Pacheco et al. 2000) at the image's own
   resolution, within the field; a defocused or motion-blurred image has little high-frequency energy;
4. skin: the share of the field whose chroma lies in the skin range of YCbCr (Chai and Ngan 1999:
   Cb 77-127, Cr 133-173, which holds across skin tones); an H&E slide (pink and purple), a scanned
   page (grey) or a photo of anything else has little;
5. lesion: a lesion is segmented within the field (``inference.segmentation``).

Each failed check is a ``QualityProblem`` with a code; an image with any problem is not scored.
``inspect`` also hands on what the checks found: the image is resized and its field of view found
once, and the lesion the gate segmented is the one the explanations measure (no second segmentation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from inference.segmentation import (
    Segmentation,
    SegmentationError,
    field_of_view,
    luminance,
    segment_within,
    working_copy,
)

MIN_FIELD = 0.2  # of the frame
DARK_MEAN, BRIGHT_MEAN = 45.0, 225.0  # luminance of the field
CLIPPED = 0.25  # share of the field at >= 250 (any channel) or <= 8 (luminance)
MIN_SHARPNESS = 8.0  # variance of the Laplacian, luminance units squared
MIN_SKIN = 0.35  # share of the field with skin chroma
FOCUS_SIDE = 1024  # the focus measure reads at most this many pixels a side (centre crop) at full resolution


@dataclass(frozen=True, slots=True)
class QualityProblem:
    code: str  # under-exposed, over-exposed, blurred, no-skin, no-lesion
    detail: str


def _sharpness(rgb: np.ndarray, field: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of the luminance inside the field, at full resolution."""
    height, width = rgb.shape[:2]
    top, left = max(0, (height - FOCUS_SIDE) // 2), max(0, (width - FOCUS_SIDE) // 2)
    grey = luminance(rgb[top : top + FOCUS_SIDE, left : left + FOCUS_SIDE].astype(np.float32))
    laplacian = grey[1:-1, :-2] + grey[1:-1, 2:] + grey[:-2, 1:-1] + grey[2:, 1:-1] - 4 * grey[1:-1, 1:-1]
    full = np.asarray(Image.fromarray(field).resize((width, height), Image.Resampling.NEAREST))
    inside = full[top : top + FOCUS_SIDE, left : left + FOCUS_SIDE][1:-1, 1:-1]
    values = laplacian[inside] if inside.sum() > 100 else laplacian.ravel()
    return float(values.var())


def _skin_share(small: np.ndarray, field: np.ndarray) -> float:
    r, g, b = small[..., 0], small[..., 1], small[..., 2]
    cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
    skin = (cb >= 77) & (cb <= 127) & (cr >= 133) & (cr <= 173)
    return float(skin[field].mean())


@dataclass(frozen=True, slots=True)
class QualityReport:
    """The checks' verdict, and the lesion they found when every check passed."""

    problems: list[QualityProblem]
    segmentation: Segmentation | None = None


def assess(rgb: np.ndarray) -> list[QualityProblem]:
    """What makes this RGB image unfit for a dermoscopy model; empty when it is fit."""
    return inspect(rgb).problems


def inspect(rgb: np.ndarray) -> QualityReport:
    """``assess``, with the lesion segmentation of a fit image (None when a check failed)."""
    small, scale = working_copy(rgb)
    field = field_of_view(small)
    share = float(field.mean())
    if share < MIN_FIELD:
        return QualityReport([QualityProblem("under-exposed", f"only {share:.0%} of the frame is lit: no field of "
                                                              "view to analyse")])  # fmt: skip
    light = luminance(small)[field]
    problems = []
    brightest = np.maximum(np.maximum(small[..., 0], small[..., 1]), small[..., 2])  # faster than max(axis=-1)
    clipped_high = float((brightest[field] >= 250).mean())
    clipped_low = float((light <= 8).mean())
    if light.mean() > BRIGHT_MEAN or clipped_high > CLIPPED:
        problems.append(QualityProblem("over-exposed", f"mean luminance {light.mean():.0f}, {clipped_high:.0%} "
                                                       "of the field clipped to white"))  # fmt: skip
    elif light.mean() < DARK_MEAN or clipped_low > CLIPPED:
        problems.append(QualityProblem("under-exposed", f"mean luminance {light.mean():.0f}, {clipped_low:.0%} "
                                                        "of the field black"))  # fmt: skip
    sharpness = _sharpness(rgb, field)
    if sharpness < MIN_SHARPNESS:
        problems.append(QualityProblem("blurred", f"variance of the Laplacian {sharpness:.1f} < {MIN_SHARPNESS}"))
    skin = _skin_share(small, field)
    if skin < MIN_SKIN:
        problems.append(QualityProblem("no-skin", f"{skin:.0%} of the field has the colour of skin"))
    if problems:
        return QualityReport(problems)
    try:
        return QualityReport([], segment_within(small, scale, field))
    except SegmentationError as exc:
        return QualityReport([QualityProblem("no-lesion", str(exc))])
