"""The dermoscopy ABCD rule (Stolz et al. 1994), computed by rule from the segmented lesion.

- A, asymmetry (0-2): the number of two perpendicular axes through the lesion's centroid about which
  its contour or its colours are asymmetric, the axes turned to give the lowest count (as the rule says).
- B, border (0-8): the number of the lesion's eight 45-degree border segments in which the pigment
  ends abruptly rather than fading into the skin.
- C, colour (1-6): how many of white, red, light brown, dark brown, blue-grey and black are present.
- D, differential structures (1-5: pigment network, structureless areas, dots, globules, streaks):
  **not assessed**. No honest detector of these structures exists here, so the Total Dermoscopy Score
  (TDS = 1.3 A + 0.1 B + 0.5 C + 0.5 D) is not computed; what is reported is the partial score
  1.3 A + 0.1 B + 0.5 C and the TDS range it allows (D from 1 to 5), with the published category
  (< 4.75 benign, 4.75-5.45 suspicious, > 5.45 highly suspicious of melanoma) only when that whole
  range falls in one category.

The diameter is morphometry beside the rule (in mm when the pixel spacing is known). All of it is
descriptive: a checkable explanation next to the network's output, not a diagnosis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from inference.segmentation import Segmentation, SegmentationError, erode, luminance, segment
from inference.synthetic import LESION_COLOURS

__all__ = ["DermoscopyAbcd", "SegmentationError", "analyse", "pixel_spacing_mm"]

STOLZ_COLOURS = ("white", "red", "light-brown", "dark-brown", "blue-grey", "black")
MIN_COLOUR_SHARE = 0.05  # a colour counts when it covers at least 5 % of the lesion
MAX_COLOUR_DISTANCE = 70.0  # farther than this from every prototype: no definite colour
SHAPE_ASYMMETRY = 0.06  # share of the lesion not covered by its mirror image
COLOUR_ASYMMETRY = 0.25  # total variation distance between the colour shares of the two halves
ABRUPT = 0.55  # the share of the border's contrast crossed within 3 working pixels
TDS_BENIGN, TDS_SUSPICIOUS = 4.75, 5.45
TDS_WEIGHTS = (1.3, 0.1, 0.5, 0.5)


@dataclass(frozen=True, slots=True)
class DermoscopyAbcd:
    asymmetry: int  # A, 0-2 axes
    border: int  # B, 0-8 abrupt segments
    colours: tuple[str, ...]  # C, the Stolz colours present
    diameter_px: float  # greatest extent, in pixels of the original image
    diameter_mm: float | None  # when the pixel spacing is known
    area_fraction: float  # of the field of view

    @property
    def colour_count(self) -> int:
        return max(1, len(self.colours))

    @property
    def partial_score(self) -> float:
        """1.3 A + 0.1 B + 0.5 C: the TDS without its D term."""
        a, b, c, _ = TDS_WEIGHTS
        return round(a * self.asymmetry + b * self.border + c * self.colour_count, 2)

    @property
    def tds_range(self) -> tuple[float, float]:
        """The Total Dermoscopy Score this lesion can have for any D from 1 to 5."""
        d = TDS_WEIGHTS[3]
        return round(self.partial_score + d * 1, 2), round(self.partial_score + d * 5, 2)

    @property
    def category(self) -> str | None:
        """``benign``, ``suspicious`` or ``highly-suspicious`` when every possible TDS agrees, else None."""
        low, high = (tds_category(value) for value in self.tds_range)
        return low if low == high else None


def tds_category(tds: float) -> str:
    """Stolz's cut-offs on the Total Dermoscopy Score."""
    if tds < TDS_BENIGN:
        return "benign"
    return "suspicious" if tds <= TDS_SUSPICIOUS else "highly-suspicious"


def _colour_labels(seg: Segmentation, region: np.ndarray) -> np.ndarray:
    """Per lesion pixel the index of its Stolz colour, -1 when it is none of them."""
    pixels = seg.small[region]
    prototypes = np.array([LESION_COLOURS[name] for name in STOLZ_COLOURS], np.float32)
    distances = np.linalg.norm(pixels[:, None, :] - prototypes[None, :, :], axis=-1)
    labels = np.argmin(distances, axis=1)
    labels[distances.min(axis=1) > MAX_COLOUR_DISTANCE] = -1
    white = STOLZ_COLOURS.index("white")  # white is lighter than the surrounding skin, not skin itself
    skin_light = float(seg.skin @ np.array([0.299, 0.587, 0.114]))
    labels[(labels == white) & (luminance(pixels) < skin_light + 10)] = -1
    return np.asarray(labels)


def _colours(labels: np.ndarray) -> tuple[str, ...]:
    shares = np.bincount(labels[labels >= 0], minlength=len(STOLZ_COLOURS)) / max(len(labels), 1)
    return tuple(name for name, share in zip(STOLZ_COLOURS, shares, strict=True) if share >= MIN_COLOUR_SHARE)


def _axis_asymmetric(cells: np.ndarray, labels: np.ndarray, region: np.ndarray, normal: np.ndarray) -> bool:
    """Contour or colours asymmetric about the axis through the centroid perpendicular to ``normal``."""
    height, width = region.shape
    centre = cells.mean(axis=0)
    side = (cells - centre) @ normal
    mirrored = np.rint(cells - 2 * np.outer(side, normal)).astype(int)
    inside = (mirrored[:, 0] >= 0) & (mirrored[:, 0] < height) & (mirrored[:, 1] >= 0) & (mirrored[:, 1] < width)
    covered = np.zeros(len(cells), bool)
    covered[inside] = region[mirrored[inside, 0], mirrored[inside, 1]]
    if 1.0 - covered.mean() > SHAPE_ASYMMETRY:
        return True
    halves = [labels[(side > 0) & (labels >= 0)], labels[(side <= 0) & (labels >= 0)]]
    shares = [np.bincount(h, minlength=len(STOLZ_COLOURS)) / max(len(h), 1) for h in halves]
    return bool(0.5 * np.abs(shares[0] - shares[1]).sum() > COLOUR_ASYMMETRY)


def _asymmetry(seg: Segmentation, core: np.ndarray) -> int:
    """A: the lowest count over pairs of perpendicular axes turned in 10-degree steps (the rule places
    the axes where they give the lowest score)."""
    cells = np.argwhere(seg.lesion).astype(np.float64)
    labels = np.full(seg.lesion.shape, -1)
    labels[core] = _colour_labels(seg, core)
    values = labels[seg.lesion]
    best = 2
    for degrees in range(0, 90, 10):
        angle = np.radians(degrees)
        normals = (np.array([np.cos(angle), np.sin(angle)]), np.array([-np.sin(angle), np.cos(angle)]))
        best = min(best, sum(_axis_asymmetric(cells, values, seg.lesion, n) for n in normals))
    return best


def _border(seg: Segmentation) -> int:
    """B: the 45-degree segments (from the centroid, image axes) whose rays mostly cross an abrupt edge."""
    cells = np.argwhere(seg.lesion).astype(np.float64)
    cy, cx = cells.mean(axis=0)
    height, width = seg.lesion.shape
    reach = np.arange(0, max(height, width), 0.5)
    abrupt = 0
    for octant in range(8):
        votes = []
        for degrees in np.arange(octant * 45 + 2.5, octant * 45 + 45, 5.0):
            angle = np.radians(degrees)
            ys, xs = np.rint(cy + reach * np.sin(angle)).astype(int), np.rint(cx + reach * np.cos(angle)).astype(int)
            keep = (ys >= 0) & (ys < height) & (xs >= 0) & (xs < width)
            ys, xs = ys[keep], xs[keep]
            ray = seg.lesion[ys, xs]
            if ray.all() or not ray[0]:
                continue
            edge = int(np.argmin(ray))  # the first step out of the lesion
            profile = seg.contrast[ys, xs]
            step = 6  # samples: 3 working pixels
            inner = float(np.median(profile[max(0, edge - 24) : max(1, edge - 12)]))
            outer = float(np.median(profile[edge + 12 : edge + 24])) if edge + 12 < len(profile) else 0.0
            span = inner - outer
            if span <= 0 or not seg.field[ys[min(edge + 12, len(ys) - 1)], xs[min(edge + 12, len(xs) - 1)]]:
                continue
            drops = profile[max(0, edge - 12) : edge + 12 - step] - profile[max(0, edge - 12) + step : edge + 12]
            votes.append(float(drops.max(initial=0.0)) / span >= ABRUPT)
        abrupt += bool(votes) and sum(votes) > len(votes) / 2
    return abrupt


def _diameter(region: np.ndarray) -> float:
    boundary = region & ~erode(region, 1)
    points = np.argwhere(boundary).astype(np.float64)
    if len(points) > 1500:
        points = points[np.linspace(0, len(points) - 1, 1500).astype(int)]
    differences = points[:, None, :] - points[None, :, :]
    return float(np.sqrt((differences**2).sum(-1)).max())


def analyse(
    rgb: np.ndarray, pixel_spacing_mm: tuple[float, float] | None = None, segmentation: Segmentation | None = None
) -> DermoscopyAbcd:
    """The ABCD rule's A, B and C for the lesion in an RGB image; ``pixel_spacing_mm`` (row, column) gives mm.
    ``segmentation``: the lesion already segmented in this image (by the quality gate), measured as it is."""
    seg = segmentation if segmentation is not None else segment(rgb)
    core = erode(seg.lesion, 2)  # colours inside the lesion, not the blend with the skin at its rim
    core = core if core.any() else seg.lesion
    labels = _colour_labels(seg, core)
    diameter_px = _diameter(seg.lesion) / seg.scale
    diameter_mm = None if pixel_spacing_mm is None else diameter_px * float(np.mean(pixel_spacing_mm))
    return DermoscopyAbcd(
        asymmetry=_asymmetry(seg, core),
        border=_border(seg),
        colours=_colours(labels),
        diameter_px=diameter_px,
        diameter_mm=diameter_mm,
        area_fraction=float(seg.lesion.sum() / max(seg.field.sum(), 1)),
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
