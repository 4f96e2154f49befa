"""The interpretable ABCD analyser measures what the synthetic lesions were drawn with."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from inference.abcd import SegmentationError, analyse, pixel_spacing_mm
from inference.synthetic import LesionSpec, lesion_image, random_spec
from tests.dicom_factories import dermoscopic

SEEDS = range(6)


def features(spec: LesionSpec, spacing: tuple[float, float] | None = (0.05, 0.05)) -> list:
    return [analyse(lesion_image(spec, 256, seed=seed), spacing) for seed in SEEDS]


def test_each_criterion_moves_its_own_feature() -> None:
    plain = features(LesionSpec(0.0, 0.0, 1, 100))
    lobed = features(LesionSpec(0.9, 0.0, 1, 100))
    ragged = features(LesionSpec(0.0, 0.9, 1, 100))
    variegated = features(LesionSpec(0.0, 0.0, 4, 100))
    assert max(f.asymmetry for f in plain) < min(f.asymmetry for f in lobed)
    assert max(f.border_irregularity for f in plain) < 1.1 < 1.4 < min(f.border_irregularity for f in ragged)
    assert {f.colour_count for f in plain} == {1}
    assert {f.colour_count for f in variegated} == {4}


def test_diameter_in_millimetres_from_the_pixel_spacing() -> None:
    for measured in features(LesionSpec(0.0, 0.0, 1, 120), spacing=(0.04, 0.04)):
        assert measured.diameter_px == pytest.approx(120, rel=0.03)
        assert measured.diameter_mm == pytest.approx(4.8, rel=0.03)
    assert all(f.diameter_mm is None for f in features(LesionSpec(0.0, 0.0, 1, 120), spacing=None))


def test_large_images_are_measured_in_their_own_pixels() -> None:
    measured = analyse(lesion_image(LesionSpec(0.0, 0.0, 2, 300), 640, seed=1))
    assert measured.diameter_px == pytest.approx(300, rel=0.03)


def test_pixel_spacing_from_dicom() -> None:
    ds = Dataset()
    assert pixel_spacing_mm(ds) is None
    ds.NominalScannedPixelSpacing = [0.1, 0.1]
    assert pixel_spacing_mm(ds) == (0.1, 0.1)
    ds.PixelSpacing = [0.02, 0.03]
    assert pixel_spacing_mm(ds) == (0.02, 0.03)


@pytest.mark.parametrize("syntax", [pydicom.uid.ExplicitVRLittleEndian, pydicom.uid.JPEGBaseline8Bit])
def test_images_decoded_from_dicom(syntax: pydicom.uid.UID) -> None:
    ds = dermoscopic(syntax=syntax)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    decoded = pydicom.dcmread(io.BytesIO(buffer.getvalue()))
    measured = analyse(decoded.pixel_array)
    assert measured.colour_count >= 1 and measured.diameter_px > 10


def test_no_lesion_is_an_error() -> None:
    skin = np.full((128, 128, 3), (224, 172, 135), np.uint8)
    with pytest.raises(SegmentationError):
        analyse(skin)
    with pytest.raises(SegmentationError):
        analyse(np.zeros((64, 64), np.uint8))


def test_generator_is_deterministic_and_labels_follow_the_rule() -> None:
    spec = LesionSpec(0.7, 0.7, 2, 90)
    assert np.array_equal(lesion_image(spec, 128, seed=4), lesion_image(spec, 128, seed=4))
    assert spec.suspicious and not LesionSpec(0.7, 0.1, 2, 90).suspicious
    rng = np.random.default_rng(0)
    labels = [random_spec(rng, 256, suspicious=flag).suspicious == flag for flag in (True, False) * 20]
    assert all(labels)
