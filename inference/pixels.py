"""DICOM pixel data to an RGB array, for every transfer syntax the node accepts (the pydicom pixel
plugins the project installs decode JPEG, JPEG-LS, JPEG 2000 and RLE)."""

from __future__ import annotations

import numpy as np
from pydicom import Dataset


class UndecodableImage(ValueError):
    """The pixel data cannot be turned into an image: a poison input, not a transient failure."""


def rgb_pixels(ds: Dataset) -> np.ndarray:
    """The first frame as an (H, W, 3) uint8 RGB array (grey images repeated on three channels)."""
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for broken pixel data
        raise UndecodableImage(f"the pixel data cannot be decoded: {exc}") from exc
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    if frames > 1:
        pixels = pixels[0]
    photometric = str(getattr(ds, "PhotometricInterpretation", "RGB"))
    # pydicom's pixel_array already returns YBR_FULL/YBR_FULL_422 (and JPEG 2000's YBR_ICT/RCT) as RGB
    if pixels.ndim == 2 or samples == 1:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
        if photometric == "MONOCHROME1":
            pixels = pixels.max() - pixels
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise UndecodableImage(f"unexpected pixel array shape {pixels.shape}")
    if pixels.dtype != np.uint8:
        bits = int(getattr(ds, "BitsStored", 8) or 8)
        pixels = np.clip(pixels.astype(np.float32) / (2**bits - 1) * 255, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(pixels)
