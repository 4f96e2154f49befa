"""The dermoscopy ABCD rule on generated lesions whose asymmetry, border and colours are known, with and
without the dermatoscope's round vignette."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from inference.abcd import SegmentationError, analyse, pixel_spacing_mm, tds_category
from inference.segmentation import segment
from inference.synthetic import LesionSpec, lesion_image, random_spec
from inference.synthetic_scenes import Drawing, painted_lesion
from tests.dicom_factories import dermoscopic

SEEDS = (0, 1, 2)


@pytest.mark.parametrize("vignette", [True, False])
def test_the_field_of_view_is_not_the_lesion(vignette: bool) -> None:
    """The analyser measured the dermatoscope's round field (14.6 mm, 'white', asymmetry 0.002): now the lesion."""
    drawing = Drawing(radius=50, colours=("dark-brown",), vignette=vignette)
    for seed in SEEDS:
        image, truth = painted_lesion(drawing, 256, seed)
        found = segment(image).lesion
        assert (found & truth).sum() / (found | truth).sum() > 0.9
        measured = analyse(image, (0.05, 0.05))
        assert measured.diameter_mm == pytest.approx(5.0, rel=0.05)  # 100 px of 0.05 mm, not the 12.8 mm field
        assert measured.colours == ("dark-brown",)
        assert measured.asymmetry == 0


@pytest.mark.parametrize(
    ("lobes", "axes"), [((), 0), (((0, 0.6),), 1), (((200, 0.6),), 1), (((0, 0.7), (110, 0.4)), 2)]
)
def test_asymmetry_counts_the_axes_of_the_contour(lobes: tuple[tuple[float, float], ...], axes: int) -> None:
    for seed in SEEDS:
        assert analyse(painted_lesion(Drawing(lobes=lobes), 256, seed)[0]).asymmetry == axes


def test_asymmetry_of_colour_alone() -> None:
    """A round lesion half black, half light brown: asymmetric in colour about one axis only."""
    image, _ = painted_lesion(Drawing(colours=("light-brown", "black"), split_colours=True))
    assert analyse(image).asymmetry == 1


@pytest.mark.parametrize("abrupt", [0, 3, 5, 8])
def test_border_counts_the_abrupt_segments(abrupt: int) -> None:
    for seed in SEEDS:
        assert analyse(painted_lesion(Drawing(abrupt_octants=abrupt), 256, seed)[0]).border == abrupt


@pytest.mark.parametrize(
    "colours",
    [("dark-brown",), ("light-brown", "black"), ("black", "dark-brown", "light-brown"),
     ("white", "red", "blue-grey", "black")],
)  # fmt: skip
def test_colours_are_the_stolz_colours_present(colours: tuple[str, ...]) -> None:
    image, _ = painted_lesion(Drawing(radius=80, colours=colours))
    assert set(analyse(image).colours) == set(colours)


def test_no_total_dermoscopy_score_without_d() -> None:
    """D is not assessed: the partial score and the TDS range, a category only when the range decides it."""
    plain = analyse(painted_lesion(Drawing(abrupt_octants=0))[0])
    assert (plain.asymmetry, plain.border) == (0, 0)
    assert plain.partial_score == pytest.approx(0.5 * plain.colour_count)
    assert plain.tds_range == (pytest.approx(plain.partial_score + 0.5), pytest.approx(plain.partial_score + 2.5))
    assert plain.category == "benign"
    colours = ("light-brown", "dark-brown", "blue-grey", "black")
    busy = analyse(painted_lesion(Drawing(lobes=((0, 0.7), (110, 0.4)), colours=colours))[0])
    assert (busy.asymmetry, busy.border, busy.colour_count) == (2, 8, 4)
    assert busy.partial_score == pytest.approx(5.4)  # 1.3 x 2 + 0.1 x 8 + 0.5 x 4
    assert busy.category == "highly-suspicious"  # 5.9 .. 7.9 with any D: above 5.45 whatever D is
    middle = analyse(painted_lesion(Drawing(lobes=((0, 0.6),), colours=("dark-brown",)))[0])
    assert middle.category is None  # 3.1 .. 5.1: D would decide
    assert [tds_category(v) for v in (4.74, 4.75, 5.45, 5.46)] == ["benign", "suspicious", "suspicious",
                                                                     "highly-suspicious"]  # fmt: skip


def test_large_images_are_measured_in_their_own_pixels() -> None:
    measured = analyse(lesion_image(LesionSpec(0.0, 0.0, 2, 300), 640, seed=1))
    assert measured.diameter_px == pytest.approx(300, rel=0.03)
    assert all(f.diameter_mm is None for f in [measured])


def test_the_demo_generator_lesions() -> None:
    assert analyse(lesion_image(LesionSpec(0.0, 0.0, 1, 100), 256, seed=1)).asymmetry == 0
    assert analyse(lesion_image(LesionSpec(0.9, 0.0, 1, 100), 256, seed=1)).asymmetry >= 1
    assert analyse(lesion_image(LesionSpec(0.0, 0.0, 4, 100), 256, seed=1)).colour_count == 4


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
    with pytest.raises(SegmentationError, match="dark"):
        analyse(np.zeros((64, 64, 3), np.uint8))


def test_generator_is_deterministic_and_labels_follow_the_rule() -> None:
    spec = LesionSpec(0.7, 0.7, 2, 90)
    assert np.array_equal(lesion_image(spec, 128, seed=4), lesion_image(spec, 128, seed=4))
    assert spec.suspicious and not LesionSpec(0.7, 0.1, 2, 90).suspicious
    rng = np.random.default_rng(0)
    labels = [random_spec(rng, 256, suspicious=flag).suspicious == flag for flag in (True, False) * 20]
    assert all(labels)
