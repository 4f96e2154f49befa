"""The interpretable analyser: lesion segmentation and the ABCD features (asymmetry, border
irregularity, colour count, diameter), computed with plain image geometry, no training.

It stands next to the network's output as an explanation a clinician can check. The numbers are
descriptive measurements of the image, not a diagnosis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from inference.synthetic import COLOUR_ORDER, LESION_COLOURS

WORKING_SIZE = 256
MIN_COLOUR_SHARE = 0.05  # a colour counts when it covers at least 5% of the lesion


class SegmentationError(ValueError):
    """No lesion could be separated from the skin."""


@dataclass(frozen=True, slots=True)
class AbcdFeatures:
    asymmetry: float  # 0 (symmetric about both principal axes) .. 1
    border_irregularity: float  # perimeter^2 / (4 pi area): 1 for a perfect disc, higher when ragged
    colours: tuple[str, ...]
    diameter_px: float  # greatest extent, in pixels of the original image
    diameter_mm: float | None  # when the pixel spacing is known
    area_fraction: float

    @property
    def colour_count(self) -> int:
        return len(self.colours)


def _resize(rgb: np.ndarray) -> tuple[np.ndarray, float]:
    height, width = rgb.shape[:2]
    scale = WORKING_SIZE / max(height, width)
    if scale >= 1:
        return rgb.astype(np.float32), 1.0
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR), np.float32)
    return small, scale


def _flood(mask: np.ndarray, seed: tuple[int, int]) -> np.ndarray:
    """The 4-connected region of ``mask`` that contains ``seed``: the seed grown by dilations
    constrained to the mask (morphological reconstruction), vectorised with numpy."""
    region = np.zeros_like(mask)
    region[seed] = mask[seed]
    while True:
        grown = region.copy()
        for _ in range(8):  # several steps between the (costlier) convergence checks
            step = grown.copy()
            step[1:, :] |= grown[:-1, :]
            step[:-1, :] |= grown[1:, :]
            step[:, 1:] |= grown[:, :-1]
            step[:, :-1] |= grown[:, 1:]
            grown = step & mask
        if np.array_equal(grown, region):
            return region
        region = grown


def _component_at_centre(mask: np.ndarray) -> np.ndarray:
    """The connected region of ``mask`` nearest the image centre."""
    height, width = mask.shape
    points = np.argwhere(mask)
    if len(points) == 0:
        raise SegmentationError("no region differs from the skin")
    start = points[np.argmin(np.hypot(points[:, 0] - height / 2, points[:, 1] - width / 2))]
    return _flood(mask, (int(start[0]), int(start[1])))


def _fill_holes(region: np.ndarray) -> np.ndarray:
    padded = np.pad(~region, 1, constant_values=True)
    outside = _flood(padded, (0, 0))[1:-1, 1:-1]
    return ~outside


def segment(rgb: np.ndarray) -> np.ndarray:
    """A boolean lesion mask at the working size: the region that differs from the skin around it,
    nearest the centre, holes filled. The dermoscope's black vignette is excluded."""
    small, _ = _resize(rgb)
    luminance = small @ np.array([0.299, 0.587, 0.114], np.float32)
    lit = luminance > 20  # outside the vignette
    height, width = luminance.shape
    ring = np.zeros_like(lit)
    ring[: height // 8, :] = ring[-height // 8 :, :] = ring[:, : width // 8] = ring[:, -width // 8 :] = True
    skin = np.median(small[lit & ring], axis=0) if np.any(lit & ring) else np.median(small[lit], axis=0)
    distance = np.linalg.norm(small - skin, axis=-1)
    # Lesion: clearly unlike the skin around it. Otsu would split a many-coloured lesion between
    # its own colours, so the threshold comes from the skin's own variation.
    noise = float(np.median(distance[lit & ring])) if np.any(lit & ring) else 5.0
    threshold = max(25.0, 4.0 * noise)
    candidate = (distance > threshold) & lit
    region = _fill_holes(_component_at_centre(candidate))
    if region.sum() < 0.002 * region.size:
        raise SegmentationError("the lesion is too small to measure")
    return region


def _asymmetry(region: np.ndarray) -> float:
    """1 - the share of the lesion that its mirror image covers, about each principal axis, averaged."""
    points = np.argwhere(region).astype(np.float64)
    centre = points.mean(axis=0)
    _, vectors = np.linalg.eigh(np.cov((points - centre).T))
    height, width = region.shape
    scores = []
    for axis in vectors.T:
        reflection = 2 * np.outer(axis, axis) - np.eye(2)
        mirrored = np.rint((points - centre) @ reflection.T + centre).astype(int)
        inside = (mirrored[:, 0] >= 0) & (mirrored[:, 0] < height) & (mirrored[:, 1] >= 0) & (mirrored[:, 1] < width)
        covered = np.zeros(len(points), bool)
        covered[inside] = region[mirrored[inside, 0], mirrored[inside, 1]]
        scores.append(1.0 - covered.mean())
    return float(np.clip(np.mean(scores), 0, 1))


def _perimeter(region: np.ndarray) -> float:
    padded = np.pad(region, 1)
    edges = (padded[1:-1, 1:-1] != padded[:-2, 1:-1]).sum() + (padded[1:-1, 1:-1] != padded[2:, 1:-1]).sum()
    edges += (padded[1:-1, 1:-1] != padded[1:-1, :-2]).sum() + (padded[1:-1, 1:-1] != padded[1:-1, 2:]).sum()
    return float(edges) / 2 * (np.pi / 4)  # a 4-connected edge count overestimates a curve's length by 4/pi


def _colours(small: np.ndarray, region: np.ndarray) -> tuple[str, ...]:
    pixels = small[region]
    prototypes = np.array([LESION_COLOURS[name] for name in COLOUR_ORDER], np.float32)
    nearest = np.argmin(np.linalg.norm(pixels[:, None, :] - prototypes[None, :, :], axis=-1), axis=1)
    shares = np.bincount(nearest, minlength=len(COLOUR_ORDER)) / max(len(pixels), 1)
    return tuple(name for name, share in zip(COLOUR_ORDER, shares, strict=True) if share >= MIN_COLOUR_SHARE)


def _diameter(region: np.ndarray) -> float:
    boundary = region & ~(
        np.roll(region, 1, 0) & np.roll(region, -1, 0) & np.roll(region, 1, 1) & np.roll(region, -1, 1)
    )
    points = np.argwhere(boundary).astype(np.float64)
    if len(points) > 1500:
        points = points[np.linspace(0, len(points) - 1, 1500).astype(int)]
    differences = points[:, None, :] - points[None, :, :]
    return float(np.sqrt((differences**2).sum(-1)).max())


def analyse(rgb: np.ndarray, pixel_spacing_mm: tuple[float, float] | None = None) -> AbcdFeatures:
    """ABCD features of the lesion in an RGB image; ``pixel_spacing_mm`` (row, column) gives mm."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise SegmentationError("the ABCD analyser needs an RGB image")
    small, scale = _resize(rgb)
    region = segment(rgb)
    area = float(region.sum())
    diameter_px = _diameter(region) / scale
    diameter_mm = None
    if pixel_spacing_mm is not None:
        diameter_mm = diameter_px * float(np.mean(pixel_spacing_mm))
    return AbcdFeatures(
        asymmetry=_asymmetry(region),
        border_irregularity=_perimeter(region) ** 2 / (4 * np.pi * area),
        colours=_colours(small, region),
        diameter_px=diameter_px,
        diameter_mm=diameter_mm,
        area_fraction=area / region.size,
    )


def pixel_spacing_mm(ds: Any) -> tuple[float, float] | None:
    """Row and column spacing in mm from a DICOM dataset (PixelSpacing, else ImagerPixelSpacing,
    else NominalScannedPixelSpacing); None when the image is not calibrated."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing"):
        value = ds.get(keyword)
        if value is not None and len(value) == 2:
            row, column = float(value[0]), float(value[1])
            if row > 0 and column > 0:
                return row, column
    return None
