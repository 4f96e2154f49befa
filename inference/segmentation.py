"""Where the skin is and where the lesion is, by plain image geometry (no training).

A dermatoscope images a round field of view: what lies outside it is the instrument's black vignette,
never skin. ``field_of_view`` finds it (the dark region connected to the frame, its rim trimmed);
``segment`` separates the lesion from the skin *within* it: the region clearly unlike the skin of
the field's outer ring, nearest the centre, holes filled. Both work on a copy at most
``WORKING_SIZE`` pixels a side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

WORKING_SIZE = 256
DARK = 35.0  # luminance below which a pixel may belong to the vignette
LUMINANCE = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601


class SegmentationError(ValueError):
    """No lesion could be separated from the skin."""


@dataclass(frozen=True, slots=True)
class Segmentation:
    """The working-size image, its field of view, the lesion within it and the skin colour around it."""

    small: np.ndarray  # (h, w, 3) float32
    scale: float  # working size / original size
    field: np.ndarray  # (h, w) bool: inside the dermatoscope's field of view
    lesion: np.ndarray  # (h, w) bool
    skin: np.ndarray  # (3,) the median colour of the field's outer ring
    contrast: np.ndarray  # (h, w) colour distance from the skin


def working_copy(rgb: np.ndarray) -> tuple[np.ndarray, float]:
    height, width = rgb.shape[:2]
    scale = WORKING_SIZE / max(height, width)
    if scale >= 1:
        return rgb.astype(np.float32), 1.0
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR), np.float32)
    return small, scale


def luminance(small: np.ndarray) -> np.ndarray:
    return np.asarray(small @ LUMINANCE, np.float32)


def flood(mask: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """The 4-connected parts of ``mask`` that hold a seed (morphological reconstruction), from the
    connected components scipy labels."""
    labels, _ = ndimage.label(mask)  # the default structure: 4-connectivity
    reached = np.zeros(int(labels.max()) + 1, bool)
    reached[labels[seeds & mask]] = True
    reached[0] = False  # the background
    return np.asarray(reached[labels])


def erode(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary erosion by a square of side 2 radius + 1: no outside pixel in the window, counted with a
    summed-area table (the same cost for any radius); beyond the frame counts as outside."""
    if radius <= 0:
        return mask
    outside = np.pad(~mask, radius, constant_values=True).astype(np.int32)
    table = np.pad(outside.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    side = 2 * radius + 1
    window = table[side:, side:] - table[:-side, side:] - table[side:, :-side] + table[:-side, :-side]
    return np.asarray(window == 0)


def field_of_view(small: np.ndarray) -> np.ndarray:
    """Inside the dermatoscope's field: not the dark region connected to the frame, and a rim
    of 2 % of the size trimmed off (the vignette's soft edge is neither skin nor lesion)."""
    dark = luminance(small) < DARK
    frame = np.zeros_like(dark)
    frame[0, :] = frame[-1, :] = frame[:, 0] = frame[:, -1] = True
    vignette = flood(dark, frame)
    return erode(~vignette, max(1, round(0.02 * max(small.shape[:2]))))


def _fill_holes(region: np.ndarray) -> np.ndarray:
    padded = np.pad(~region, 1, constant_values=True)
    seeds = np.zeros_like(padded)
    seeds[0, 0] = True
    return ~flood(padded, seeds)[1:-1, 1:-1]


def _component_at_centre(mask: np.ndarray) -> np.ndarray:
    height, width = mask.shape
    points = np.argwhere(mask)
    if len(points) == 0:
        raise SegmentationError("no region differs from the skin")
    start = points[np.argmin(np.hypot(points[:, 0] - height / 2, points[:, 1] - width / 2))]
    seeds = np.zeros_like(mask)
    seeds[int(start[0]), int(start[1])] = True
    return flood(mask, seeds)


def segment(rgb: np.ndarray) -> Segmentation:
    """The lesion within the field of view; ``SegmentationError`` when there is none to measure."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise SegmentationError("lesion segmentation needs an RGB image")
    small, scale = working_copy(rgb)
    return segment_within(small, scale, field_of_view(small))


def segment_within(small: np.ndarray, scale: float, field: np.ndarray) -> Segmentation:
    """``segment`` on a working copy whose field of view is already known (the quality gate found it):
    the same lesion, without resizing the image or finding the field again."""
    if field.sum() < 0.2 * field.size:
        raise SegmentationError("no field of view: the image is mostly dark")
    ring = field & ~erode(field, max(2, round(0.12 * max(field.shape))))
    skin = np.median(small[ring], axis=0)
    difference = small - skin
    contrast = np.sqrt(np.einsum("ijk,ijk->ij", difference, difference))  # the Euclidean norm, without a temporary
    # the threshold comes from the skin's own variation: Otsu would split a many-coloured lesion
    noise = float(np.median(contrast[ring]))
    candidate = (contrast > max(30.0, 4.0 * noise)) & field
    lesion = _fill_holes(_component_at_centre(candidate)) & field
    if lesion.sum() < 0.002 * lesion.size:
        raise SegmentationError("the lesion is too small to measure")
    if lesion.sum() > 0.9 * field.sum():
        raise SegmentationError("no skin around the lesion: the field of view shows no lesion border")
    return Segmentation(small, scale, field, lesion, skin, contrast)
