"""The demonstration model: a small MONAI DenseNet trained reproducibly on procedurally generated
dermoscopy-like lesions (``inference.synthetic``), written as a MONAI bundle directory.

It learns the rule the synthetic labels follow (two or more of asymmetry, border irregularity and
colour variegation marked: "suspicious"). It is **not** a clinical model: it has never seen a real
skin lesion. ``dermbridge model train-demo`` rebuilds it; the result ships in ``inference/models``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import monai
import numpy as np
import torch

from dicom_node.sop_classes import DERMOSCOPIC_PHOTOGRAPHY, VL_PHOTOGRAPHIC
from inference.accepted_inputs import COLOUR, AcceptedInputs
from inference.model_card import InputSpec, ModelCard, OutputClass
from inference.synthetic import lesion_image, random_spec

log = logging.getLogger(__name__)
DEMO_DIR = Path(__file__).resolve().parent / "models" / "demo-abcd"
SIZE = 96
NETWORK_DEF = {
    "_target_": "monai.networks.nets.DenseNet",
    "spatial_dims": 2,
    "in_channels": 3,
    "out_channels": 2,
    "init_features": 16,
    "growth_rate": 12,
    "block_config": [2, 3, 3],
    "bn_size": 2,
}
MEAN, STD = (0.75, 0.55, 0.45), (0.2, 0.2, 0.2)
EXCLUDED_REGIONS = ("770802007", "113277000", "123851003", "48477009", "60944009", "90418005", "86969008",
                    "29445007", "70887009", "35739000", "52953006")  # fmt: skip
ACCEPTS = AcceptedInputs(
    sop_classes=(str(DERMOSCOPIC_PHOTOGRAPHY), str(VL_PHOTOGRAPHIC)),
    # dermoscopy; external-camera photography from dermatoscopes that predate the DMS IOD, taken only when
    # the picture shows the dermatoscope's field of view (dermoscopy_only: no clinical overview photographs)
    modalities=("DMS", "XC"),
    photometric_interpretations=COLOUR,
    # the contraindicated sites, matched with every DICOM sub-region (inference.body_regions): nail unit,
    # oral mucosa, mouth, lip, skin of external genitalia, male and female external genitalia,
    # conjunctiva, skin of palm, skin of the lateral and medial border of the sole
    excluded_body_regions=EXCLUDED_REGIONS,
    min_rows=128,
    min_columns=128,
    min_age_years=18,  # the card's contraindication "Patients under 18 years", enforced
    dermoscopy_only=True,
)


def demo_card(version: str, performance: tuple[dict[str, Any], ...] = ()) -> ModelCard:
    return ModelCard(
        id="dermbridge-demo-abcd",
        version=version,
        name="DermBridge demonstration lesion classifier (synthetic data)",
        intended_use=(
            "Demonstration of the DermBridge AI pipeline only. NOT FOR CLINICAL USE: trained on "
            "procedurally generated dermoscopy-like images, never on real lesions."
        ),
        input=InputSpec(SIZE, SIZE, "RGB", 255.0, MEAN, STD),
        # melanoma *of skin*, not melanoma of any site. A naevus is 400096001 |Melanocytic nevus (disorder)|
        # (confirmed in the SNOMED CT browser): its skin-specific child's id could not be confirmed, and an
        # unconfirmed id is worse than the confirmed parent
        classes=(
            OutputClass(0, "400096001", "Melanocytic nevus", 0.5, "benign"),
            OutputClass(1, "93655004", "Malignant melanoma of skin", 0.5, "melanoma"),
        ),
        limitations=(
            "Trained on synthetic images: its outputs say nothing about real lesions.",
            "Learns the synthetic labelling rule (two or more of asymmetry, border irregularity and "
            "colour variegation), which is a simplification of the ABCD criteria.",
            "The synthetic skin tones are light only (Fitzpatrick I-III like); darker skin types are "
            "not represented and its behaviour on them is unknown.",
        ),
        performance=performance,
        training="dermbridge model train-demo: synthetic lesions, seed 20261123, see inference/demo.py",
        # Grad-CAM on this small, confident network spreads over the whole image; integrated
        # gradients from a skin baseline point at the lesion, so the card names no layer
        saliency_layer=None,
        clinical_use=False,
        contraindications=(
            "Any clinical use: this is a demonstration model with no clinical validation.",
            "Mucosal lesions (oral, genital, conjunctival mucosa); lip and genital skin.",
            "Nail and nail-bed (subungual) lesions; acral (palm, sole) lesions.",
            "Patients under 18 years.",
            "Images other than dermoscopy of a single lesion (clinical overview photographs, histology).",
        ),
        fitzpatrick_coverage=(
            "Synthetic skin tones resembling Fitzpatrick I-III only; types IV-VI are not represented. "
            "No real patient images: no clinical subgroup metrics exist."
        ),
        accepts=ACCEPTS,
    )


@dataclass(frozen=True, slots=True)
class Dataset:
    images: np.ndarray  # (N, 3, SIZE, SIZE) float32, normalised
    labels: np.ndarray  # (N,) int64


def synthetic_set(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` images (uint8, N x SIZE x SIZE x 3) and labels, half suspicious, from ``seed``."""
    rng = np.random.default_rng(seed)
    images = np.empty((count, SIZE, SIZE, 3), np.uint8)
    labels = np.empty(count, np.int64)
    for n in range(count):
        suspicious = bool(n % 2)
        spec = random_spec(rng, SIZE, suspicious)
        images[n] = lesion_image(spec, SIZE, seed=int(rng.integers(1 << 31)))
        labels[n] = int(spec.suspicious)
    return images, labels


def normalise(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


def build_network() -> torch.nn.Module:
    from monai.bundle import ConfigParser

    parser = ConfigParser({"network_def": NETWORK_DEF})
    network: torch.nn.Module = parser.get_parsed_content("network_def")
    return network


def accuracy(network: torch.nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    network.eval()
    with torch.inference_mode():
        predicted = torch.cat([network(normalise(images[i : i + 256])).argmax(1) for i in range(0, len(images), 256)])
    return float((predicted.numpy() == labels).mean())


def train_demo(out_dir: Path = DEMO_DIR, train: int = 6000, held_out: int = 1000, epochs: int = 16,
               seed: int = 20261123) -> ModelCard:  # fmt: skip
    """Train from scratch, deterministically, and write the bundle to ``out_dir``."""
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    started = time.perf_counter()
    x_train, y_train = synthetic_set(train, seed)
    x_test, y_test = synthetic_set(held_out, seed + 1)
    network = build_network()
    optimiser = torch.optim.AdamW(network.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=3e-3, total_steps=epochs * (train // 64 + 1))
    inputs, targets = normalise(x_train), torch.from_numpy(y_train)
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        network.train()
        order = torch.randperm(train, generator=generator)
        for start in range(0, train, 64):
            index = order[start : start + 64]
            batch = inputs[index]
            if epoch % 2:  # flips: a lesion's class does not depend on its orientation
                batch = torch.flip(batch, dims=(3,))
            loss = torch.nn.functional.cross_entropy(network(batch), targets[index])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
        log.info("epoch %d: loss %.3f", epoch + 1, float(loss.detach()))
    held = accuracy(network, x_test, y_test)
    performance = (
        {"subgroup": "synthetic held-out set (light skin tones only)", "metric": "accuracy", "value": round(held, 4),
         "n": held_out, "note": "synthetic images; not a clinical performance claim"},
        {"subgroup": "Fitzpatrick IV-VI", "metric": "accuracy", "value": None,
         "note": "not represented in the training data: unknown"},
    )  # fmt: skip
    card = demo_card("1.0.0", performance)
    write_bundle(out_dir, card, network)
    log.info("trained in %.0f s; held-out accuracy %.3f", time.perf_counter() - started, held)
    return card


def write_bundle(out_dir: Path, card: ModelCard, network: torch.nn.Module) -> None:
    (out_dir / "configs").mkdir(parents=True, exist_ok=True)
    (out_dir / "models").mkdir(parents=True, exist_ok=True)
    image = {"type": "image", "format": "RGB", "num_channels": 3, "spatial_shape": [SIZE, SIZE], "dtype": "float32"}
    channels = {str(c.index): c.display for c in card.classes}
    output = {"type": "probabilities", "format": "classes", "num_channels": 2, "channel_def": channels}
    metadata = {
        "version": card.version,
        "name": card.name,
        "task": "dermoscopic lesion classification (demonstration, synthetic data)",
        "description": card.intended_use,
        "authors": "DermBridge",
        "copyright": "CC0; trained on synthetic data",
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "network_data_format": {
            "inputs": {"image": image},
            "outputs": {"pred": output},
        },
        "dermbridge_model_card": card.to_dict(),
    }
    (out_dir / "configs" / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    (out_dir / "configs" / "inference.json").write_text(json.dumps({"network_def": NETWORK_DEF}, indent=2) + "\n")
    torch.save(network.state_dict(), out_dir / "models" / "model.pt")
