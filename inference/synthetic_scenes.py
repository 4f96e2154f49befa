"""Generated images with a known truth, for the admission, quality and ABCD tests (real images cannot
be used here): a dermoscopic lesion painted from an explicit geometry, and what a dermatology model
must refuse to score (an H&E microscopy tile, a scanned letter, a blurred and an over-exposed photo).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from inference.synthetic import LESION_COLOURS

SKIN = (224, 172, 135)


@dataclass(frozen=True, slots=True)
class Drawing:
    """A lesion's geometry with its dermoscopy ABCD truth built in."""

    radius: float = 60.0  # of the base disc, in pixels
    lobes: tuple[tuple[float, float], ...] = ()  # (direction in degrees, height relative to the radius)
    colours: tuple[str, ...] = ("dark-brown",)  # Stolz colours, in concentric zones from the centre out
    split_colours: bool = False  # the colours side by side (left/right halves): asymmetric in colour
    abrupt_octants: int = 8  # of the 8 border segments (0-45 degrees, 45-90, ...), how many end abruptly
    vignette: bool = True  # the dermatoscope's black round field of view
    skin: tuple[int, int, int] = SKIN


def _boundary(theta: np.ndarray, drawing: Drawing) -> np.ndarray:
    radius = np.full_like(theta, drawing.radius)
    for direction, height in drawing.lobes:
        offset = np.angle(np.exp(1j * (theta - np.radians(direction))))
        radius += drawing.radius * height * np.exp(-(offset**2) / (2 * 0.4**2))
    return radius


def painted_lesion(drawing: Drawing, size: int = 256, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The RGB uint8 image and the lesion's true mask (the 50 % pigment line where the border fades)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dx, dy = xx - size / 2, yy - size / 2
    r, theta = np.hypot(dx, dy), np.arctan2(dy, dx)
    boundary = _boundary(theta, drawing)
    octant = (np.degrees(theta) % 360 // 45).astype(int)
    fade = np.where(octant < drawing.abrupt_octants, 0.7, 0.45 * drawing.radius)  # pixels over which pigment ends
    alpha = np.clip((boundary - r) / fade + 0.5, 0, 1)
    depth = np.clip(r / np.maximum(boundary, 1), 0, 0.999)
    names = drawing.colours
    zone = (dx > 0).astype(int) * (len(names) - 1) if drawing.split_colours else (depth * len(names)).astype(int)
    zone = np.clip(zone, 0, len(names) - 1)
    pigment = np.array([LESION_COLOURS[n] for n in names], np.float32)[zone]
    image = pigment * alpha[..., None] + np.array(drawing.skin, np.float32) * (1 - alpha[..., None])
    image += rng.normal(0, 3, image.shape).astype(np.float32)
    if drawing.vignette:
        image *= _vignette(size)[..., None]
    return np.clip(image, 0, 255).astype(np.uint8), r < boundary


def _vignette(size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    distance = np.hypot(xx - size / 2, yy - size / 2) / (0.5 * size)  # a round field touching the frame
    return np.clip((0.99 - distance) / 0.04, 0, 1)


def he_tile(size: int = 256, seed: int = 0) -> np.ndarray:
    """An H&E-stained microscopy tile: pink eosin stroma with fibres, purple haematoxylin nuclei,
    white lumina."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    image = np.empty((size, size, 3), np.float32)
    image[...] = (232, 168, 206)
    fibres = np.sin(xx / 5.0 + 3 * np.sin(yy / 23.0)) * np.sin(yy / 9.0)
    image += fibres[..., None] * np.array([6, 22, 10], np.float32)
    for _ in range(size // 8):  # lumina
        cy, cx, radius = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(4, 14)
        image[np.hypot(yy - cy, xx - cx) < radius] = (246, 240, 246)
    for _ in range(size * size // 90):  # nuclei
        cy, cx = rng.uniform(0, size, 2)
        a, b = rng.uniform(2.5, 5.5), rng.uniform(2.0, 4.0)
        angle = rng.uniform(0, np.pi)
        u = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
        v = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
        image[(u / a) ** 2 + (v / b) ** 2 < 1] = np.array((88, 52, 148)) + rng.normal(0, 12, 3)
    image += rng.normal(0, 4, image.shape)
    return _soften(np.clip(image, 0, 255).astype(np.uint8), 0.8)


def document_page(size: int = 512, seed: int = 0) -> np.ndarray:
    """A scanned letter: an off-white page with lines of black words (a Secondary Capture's pixels)."""
    rng = np.random.default_rng(seed)
    page = np.full((size, size), 244, np.float32)
    line, margin = max(8, size // 40), size // 10
    for top in range(margin, size - margin, int(line * 1.8)):
        left = margin
        while left < size - margin - 10:
            width = int(rng.integers(line, 5 * line))
            word = page[top : top + line, left : min(left + width, size - margin)]
            strokes = rng.random(word.shape) < 0.45  # glyph strokes
            word[strokes] = 20
            left += width + line // 2
    page += rng.normal(0, 2, page.shape)
    grey = np.clip(page, 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def _soften(rgb: np.ndarray, radius: float) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).filter(ImageFilter.GaussianBlur(radius)))


def blurred(rgb: np.ndarray, radius: float = 5.0) -> np.ndarray:
    """Out of focus: a Gaussian blur of ``radius`` pixels."""
    return _soften(rgb, radius)


def over_exposed(rgb: np.ndarray, gain: float = 2.6) -> np.ndarray:
    """Too much light: the sensor saturates (the skin clips to white)."""
    return np.clip(rgb.astype(np.float32) * gain + 30, 0, 255).astype(np.uint8)


def under_exposed(rgb: np.ndarray, gain: float = 0.12) -> np.ndarray:
    return np.clip(rgb.astype(np.float32) * gain, 0, 255).astype(np.uint8)
