"""Admission: the model card's accepted inputs and the image-quality checks, on generated images of
what a dermoscopy model must not score (an H&E tile, a scanned letter, blurred and badly exposed
photos) and of what it must (lesions on light and dark skin)."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset

from dicom_node.sop_classes import SECONDARY_CAPTURE, VL_MICROSCOPIC
from inference.accepted_inputs import AcceptedInputs
from inference.admission import admit, check_attributes
from inference.demo import ACCEPTS
from inference.model_card import ModelCard
from inference.quality import assess
from inference.synthetic import lesion_image, random_spec
from inference.synthetic_scenes import (
    Drawing,
    blurred,
    document_page,
    he_tile,
    over_exposed,
    painted_lesion,
    under_exposed,
)
from tests.dicom_factories import dermoscopic, with_pixels


def lesion(seed: int) -> np.ndarray:
    return lesion_image(random_spec(np.random.default_rng(seed), 256, bool(seed % 2)), 256, seed=seed)


def codes(problems: list) -> set[str]:
    return {p.code for p in problems}


@pytest.mark.parametrize("seed", range(6))
def test_dermoscopic_lesions_pass(seed: int) -> None:
    assert assess(lesion(seed)) == []


@pytest.mark.parametrize("skin", [(240, 205, 185), (224, 172, 135), (150, 100, 70), (95, 62, 45)])
def test_lesions_on_every_skin_tone_pass(skin: tuple[int, int, int]) -> None:
    image, _ = painted_lesion(Drawing(skin=skin, colours=("black",) if sum(skin) < 350 else ("dark-brown",)))
    assert assess(image) == []


@pytest.mark.parametrize("seed", range(3))
def test_what_is_not_a_dermoscopic_image_of_skin(seed: int) -> None:
    assert "no-skin" in codes(assess(he_tile(256, seed)))  # H&E: pink and purple
    assert "no-skin" in codes(assess(document_page(512, seed)))  # a scanned letter: grey
    assert "blurred" in codes(assess(blurred(lesion(seed))))
    assert "over-exposed" in codes(assess(over_exposed(lesion(seed))))
    assert "under-exposed" in codes(assess(under_exposed(lesion(seed))))


def test_skin_without_a_lesion() -> None:
    noise = np.random.default_rng(0).normal(0, 3, (256, 256, 3))
    skin = np.clip(np.full((256, 256, 3), (224, 172, 135)) + noise, 0, 255).astype(np.uint8)
    assert codes(assess(skin)) == {"no-lesion"}


def image(sop_class: str | None = None, **kw: object) -> Dataset:
    ds = dermoscopic(sop_class=sop_class) if sop_class else dermoscopic()
    return with_pixels(ds, lesion(1), **kw)  # type: ignore[arg-type]


def test_the_card_decides_the_dicom_attributes() -> None:
    assert check_attributes(image(), ACCEPTS) == []
    assert codes(check_attributes(image(VL_MICROSCOPIC, modality="GM"), ACCEPTS)) == {"sop-class", "modality"}
    letter = with_pixels(dermoscopic(sop_class=SECONDARY_CAPTURE), document_page(512), modality="DOC", grey=True)
    assert codes(check_attributes(letter, ACCEPTS)) == {"sop-class", "modality", "photometric"}
    nail = image()
    nail.AnatomicRegionSequence[0].CodeValue = "770802007"  # Nail unit structure: contraindicated
    assert codes(check_attributes(nail, ACCEPTS)) == {"body-region"}
    small = dermoscopic()  # 64 x 48 pixels
    assert codes(check_attributes(small, ACCEPTS)) == {"resolution"}
    nails_only = AcceptedInputs(body_regions=("770802007",))  # a card for nail images: skin is not accepted
    assert codes(check_attributes(image(), nails_only)) == {"body-region"}


def test_admit_runs_the_pixel_checks_after_the_attributes() -> None:
    mislabelled = with_pixels(dermoscopic(), he_tile(256))  # an H&E tile sent as a dermoscopic image
    assert codes(admit(mislabelled, he_tile(256), ACCEPTS)) == {"no-skin"}
    assert admit(image(), lesion(1), ACCEPTS) == []
    unchecked = AcceptedInputs(quality_check=False)
    assert admit(mislabelled, he_tile(256), unchecked) == []


def test_the_card_round_trips_its_accepted_inputs() -> None:
    from inference.demo import demo_card

    card = demo_card("1.0.0")
    assert ModelCard.from_dict(card.to_dict()).accepts == ACCEPTS
    with pytest.raises(ValueError, match="unknown accepted-input keys"):
        AcceptedInputs.from_dict({"sop_class": ["1.2"]})
