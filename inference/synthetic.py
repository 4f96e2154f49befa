"""Procedurally generated dermoscopy-like images, for the demo model and for tests.

Each lesion is drawn from a ``LesionSpec`` whose knobs are the ABCD criteria: asymmetry, border
irregularity, colour variegation and diameter. Everything derives from the seed: the same spec
and seed give the same pixels. These are synthetic images, not clinical data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Lighter skin tones only: on darker skin this palette's light-brown is nearly the skin's own colour.
# A known limitation of the synthetic set (and of anything trained on it): darker skin types are
# not represented.
SKIN_TONES = np.array([[233, 190, 160], [224, 172, 135], [215, 162, 128]], np.float32)
# Dermoscopic colours (light brown, dark brown, black, blue-grey, red, white), the C of ABCD.
LESION_COLOURS = {
    "light-brown": (181, 120, 70),
    "dark-brown": (105, 60, 35),
    "black": (30, 25, 25),
    "blue-grey": (95, 110, 135),
    "red": (175, 55, 55),
    "white": (235, 230, 225),
}
COLOUR_ORDER = ("light-brown", "dark-brown", "black", "blue-grey", "red", "white")


@dataclass(frozen=True, slots=True)
class LesionSpec:
    asymmetry: float  # 0: symmetric .. 1: strongly lopsided
    border_irregularity: float  # 0: smooth .. 1: ragged
    colours: int  # 1..6 dermoscopic colours
    diameter_px: float  # of the undistorted disc

    @property
    def suspicious(self) -> bool:
        """The rule the demo labels follow: two or more of the ABCD criteria marked."""
        marked = (self.asymmetry > 0.5) + (self.border_irregularity > 0.5) + (self.colours >= 3)
        return marked >= 2


def random_spec(rng: np.random.Generator, size: int, suspicious: bool) -> LesionSpec:
    high, low = (0.6, 1.0), (0.0, 0.35)
    if suspicious:
        flags = rng.permutation([True, True, bool(rng.integers(2))])
    else:
        flags = rng.permutation([True, False, False]) if rng.random() < 0.5 else np.array([False] * 3)
    return LesionSpec(
        asymmetry=float(rng.uniform(*(high if flags[0] else low))),
        border_irregularity=float(rng.uniform(*(high if flags[1] else low))),
        colours=int(rng.integers(3, 6) if flags[2] else rng.integers(1, 3)),
        diameter_px=float(rng.uniform(0.3, 0.55) * size),
    )


def _radius(theta: np.ndarray, spec: LesionSpec, rng: np.random.Generator) -> np.ndarray:
    base = spec.diameter_px / 2
    direction = rng.uniform(0, 2 * np.pi)
    offset = np.angle(np.exp(1j * (theta - direction)))  # wrapped to [-pi, pi]
    lopsided = 1 + 1.1 * spec.asymmetry * np.exp(-(offset**2) / (2 * 0.45**2))  # a lobe on one side only
    ragged = np.ones_like(theta)
    for k in range(5, 16):
        ragged += spec.border_irregularity * rng.uniform(0.02, 0.07) * np.sin(k * theta + rng.uniform(0, 2 * np.pi))
    return base * lopsided * ragged


def lesion_image(spec: LesionSpec, size: int = 256, seed: int = 0) -> np.ndarray:
    """An RGB uint8 image (size x size) of one lesion on skin, with a dermoscope's vignette."""
    return _draw(spec, size, seed)[0]


def lesion_mask(spec: LesionSpec, size: int = 256, seed: int = 0) -> np.ndarray:
    """Where ``lesion_image`` drew the lesion (the ground truth a segmentation or a saliency map is checked against)."""
    return _draw(spec, size, seed)[1]


def _draw(spec: LesionSpec, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    skin = SKIN_TONES[rng.integers(len(SKIN_TONES))] + rng.normal(0, 5, 3).astype(np.float32)
    image = np.broadcast_to(skin, (size, size, 3)).astype(np.float32).copy()
    cx, cy = size / 2 + rng.normal(0, size * 0.02), size / 2 + rng.normal(0, size * 0.02)
    dx, dy = xx - cx, yy - cy
    r, theta = np.hypot(dx, dy), np.arctan2(dy, dx)
    boundary = _radius(theta, spec, rng)
    inside = r < boundary
    names = list(COLOUR_ORDER[: max(1, min(spec.colours, len(COLOUR_ORDER)))])
    rng.shuffle(names)
    # colour zones: concentric bands broken by angle, so that each colour has a sizeable share
    depth = np.clip(r / np.maximum(boundary, 1), 0, 1)
    band = np.minimum((depth * len(names) + 0.35 * np.sin(3 * theta + rng.uniform(0, 6.3))).astype(int), len(names) - 1)
    band = np.clip(band, 0, len(names) - 1)
    for index, name in enumerate(names):
        zone = inside & (band == index)
        image[zone] = np.array(LESION_COLOURS[name], np.float32)
    image += rng.normal(0, 3, image.shape).astype(np.float32)
    vignette = np.hypot(xx - size / 2, yy - size / 2) / (0.5 * np.sqrt(2) * size)
    image *= np.clip((0.98 - vignette) / 0.05, 0, 1)[..., None]
    return np.clip(image, 0, 255).astype(np.uint8), inside
