"""Rendered and thumbnail images of colour instances (PS3.18 8.3.5, 9.5): decode, convert, encode."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import apply_voi_lut, convert_color_space

from dicom_node.errors import DicomNodeError

THUMBNAIL_SIZE = 128
FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG"}


class NotRenderable(DicomNodeError):
    """The instance has no pixel data, or the frame does not exist."""


def _frame(ds: Dataset, frame: int) -> np.ndarray:
    if "PixelData" not in ds:
        raise NotRenderable("the instance has no pixel data")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if not 1 <= frame <= frames:
        raise NotRenderable(f"frame {frame} does not exist (the instance has {frames})")
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # an encoding no installed decoder handles, or corrupt pixel data
        raise NotRenderable(f"the pixel data cannot be decoded: {type(exc).__name__}") from exc
    image = pixels[frame - 1] if frames > 1 else pixels
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric.startswith("YBR") and ds.file_meta.TransferSyntaxUID.is_compressed is False:
        image = convert_color_space(image, photometric, "RGB")
    elif photometric in ("MONOCHROME1", "MONOCHROME2"):
        image = apply_voi_lut(image, ds)
        if photometric == "MONOCHROME1":
            image = image.max() - image
    return image


def _to_8bit(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    low, high = float(image.min()), float(image.max())
    scaled = (image.astype(np.float64) - low) / ((high - low) or 1.0) * 255.0
    return scaled.astype(np.uint8)


def render(
    ds: Dataset, media_type: str, *, frame: int = 1, thumbnail: bool = False, viewport: tuple[int, int] | None = None
) -> bytes:
    """The frame as ``media_type``; ``viewport`` (PS3.18 8.3.5.1.3): scaled down to fit, aspect ratio kept
    (an image smaller than the viewport is sent at its own size)."""
    image = Image.fromarray(_to_8bit(_frame(ds, frame)))
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    if thumbnail:
        image.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    elif viewport is not None:
        image.thumbnail(viewport)
    buffer = io.BytesIO()
    image.save(buffer, FORMATS[media_type], **({"quality": 90} if media_type == "image/jpeg" else {}))
    return buffer.getvalue()
