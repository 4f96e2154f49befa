"""The model side: cards, loaders, pixel decoding across transfer syntaxes, the demo model's held-out
check, and saliency maps."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from inference.demo import DEMO_DIR, SIZE, synthetic_set
from inference.loaders import load_model
from inference.model_card import ModelCard
from inference.pipeline import Runner, saliency_png
from inference.pixels import UndecodableImage, rgb_pixels
from inference.synthetic import lesion_image, lesion_mask, random_spec
from tests.dicom_factories import SYNTAXES, dermoscopic


@pytest.fixture(scope="module")
def runner() -> Runner:
    return Runner(load_model(DEMO_DIR), torch.device("cpu"))


def test_the_demo_card_says_what_it_is(runner: Runner) -> None:
    card = runner.model.card
    assert not card.clinical_use and "NOT FOR CLINICAL USE" in card.intended_use
    assert [c.code for c in card.classes] == ["400096001", "93655004"]  # SNOMED CT concepts confirmed in the browser
    assert [c.risk_tier for c in card.classes] == ["benign", "melanoma"]
    assert any("skin" in limit.lower() for limit in card.limitations)
    assert ModelCard.from_dict(card.to_dict()) == card
    with pytest.raises(ValueError, match="not a valid model card"):
        ModelCard.from_dict({"id": "x"})


def test_held_out_synthetic_accuracy_matches_the_card(runner: Runner) -> None:
    """Freshly generated images the model never saw: the accuracy is reported on the card (a
    synthetic-data figure, not a clinical claim) and must hold on a new sample."""
    images, labels = synthetic_set(200, seed=777)
    predictions = runner.predict(list(images))
    accuracy = float(np.mean([p.top == label for p, label in zip(predictions, labels, strict=True)]))
    claimed = next(row["value"] for row in runner.model.card.performance if row["metric"] == "accuracy")
    assert accuracy >= claimed - 0.07, f"held-out synthetic accuracy {accuracy:.3f}, the card says {claimed}"
    assert accuracy > 0.8, accuracy


def test_batched_and_single_predictions_agree(runner: Runner) -> None:
    rng = np.random.default_rng(3)
    images = [lesion_image(random_spec(rng, 256, bool(n % 2)), 256, seed=n) for n in range(4)]
    batched = runner.predict(images)
    for image, prediction in zip(images, batched, strict=True):
        single = runner.predict([image])[0]
        assert np.allclose(single.probabilities, prediction.probabilities, atol=1e-5)
        assert abs(sum(prediction.probabilities) - 1) < 1e-5


def save_torchscript(network: torch.nn.Module, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated upstream
        torch.jit.trace(network, torch.zeros(1, 3, SIZE, SIZE)).save(str(path))


def save_exported(network: torch.nn.Module, path: Path) -> None:
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(network, (torch.zeros(2, 3, SIZE, SIZE),), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))


@pytest.mark.parametrize(("name", "save"), [("demo.ts", save_torchscript), ("demo.pt2", save_exported)])
def test_file_loaders_and_their_saliency(runner: Runner, tmp_path: Path, name: str, save: Any) -> None:
    path = tmp_path / name
    save(runner.network.eval(), path)
    (tmp_path / f"{name}.card.json").write_text(json.dumps(runner.model.card.to_dict()))
    loaded = load_model(path)
    assert loaded.scripted
    other = Runner(loaded, torch.device("cpu"))
    rng = np.random.default_rng(1)
    images = [lesion_image(random_spec(rng, 128, n % 2 == 0), 128, seed=n) for n in range(3)]
    for mine, theirs in zip(other.predict(images), runner.predict(images), strict=True):
        assert np.allclose(mine.probabilities, theirs.probabilities, atol=1e-4)
    heat = other.saliency(images[0], 1)
    assert heat.shape == (SIZE, SIZE) and heat.min() >= 0 and heat.max() <= 1


def test_no_loader_for_a_stranger(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"\0" * 16)
    with pytest.raises(ValueError, match="no model loader accepts"):
        load_model(tmp_path / "weights.bin")
    shutil.copytree(DEMO_DIR, tmp_path / "bundle")
    metadata = json.loads((tmp_path / "bundle" / "configs" / "metadata.json").read_text())
    del metadata["dermbridge_model_card"]
    (tmp_path / "bundle" / "configs" / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(ValueError, match="dermbridge_model_card"):
        load_model(tmp_path / "bundle")


@pytest.mark.parametrize("seed", range(8))
def test_the_saliency_mass_lies_in_the_lesion(runner: Runner, seed: int) -> None:
    """The map of the top finding highlights the lesion, even at p = 1.00 (it once showed nothing)."""
    spec = random_spec(np.random.default_rng(seed), 256, bool(seed % 2))
    image, truth = lesion_image(spec, 256, seed=seed), lesion_mask(spec, 256, seed=seed)
    prediction = runner.predict([image])[0]
    heat = runner.saliency(image, prediction.top)
    assert heat.shape == (SIZE, SIZE) and heat.min() >= 0 and heat.max() == pytest.approx(1)
    full = np.asarray(Image.fromarray((heat * 255).astype(np.uint8)).resize((256, 256), Image.Resampling.BILINEAR))
    inside = float(full[truth].sum()) / float(full.sum())
    assert inside > 0.75, f"{inside:.2f} of the saliency mass in the lesion, which covers {truth.mean():.2f}"
    png = saliency_png(image, heat)
    assert png.startswith(b"\x89PNG")
    shown = np.asarray(Image.open(io.BytesIO(png)).convert("RGB").resize((256, 256)), np.int16)
    changed = np.abs(shown - image.astype(np.int16)).sum(axis=-1) > 30
    assert changed[truth].mean() > 5 * max(changed[~truth].mean(), 0.01)  # the highlight is on the lesion


def test_grad_cam_when_the_card_names_a_layer(runner: Runner) -> None:
    card = dataclasses.replace(runner.model.card, saliency_layer="features.denseblock3")
    cam_runner = Runner(dataclasses.replace(runner.model, card=card), torch.device("cpu"))
    image = lesion_image(random_spec(np.random.default_rng(2), 128, True), 128, seed=2)
    heat = cam_runner.saliency(image, 1)
    assert heat.shape == (SIZE, SIZE) and heat.min() == 0 and heat.max() == pytest.approx(1)


@pytest.mark.parametrize("syntax", SYNTAXES, ids=[str(s.name) for s in SYNTAXES])
def test_pixels_of_every_transfer_syntax(syntax: object) -> None:
    reference = rgb_pixels(dermoscopic(seed=4))
    ds = dermoscopic(seed=4, syntax=syntax)  # type: ignore[arg-type]
    decoded = rgb_pixels(ds)
    assert decoded.shape == reference.shape and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - reference.astype(int)).mean() < 6  # JPEG baseline is lossy


def test_undecodable_pixels_are_poison() -> None:
    import pydicom

    broken = dermoscopic(syntax=pydicom.uid.JPEGBaseline8Bit)
    broken.PixelData = pydicom.encaps.encapsulate([b"\xff\xd8not a jpeg\xff\xd9"])
    with pytest.raises(UndecodableImage):
        rgb_pixels(broken)
