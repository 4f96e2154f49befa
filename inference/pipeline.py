"""Images to class probabilities and saliency maps: MONAI pre-processing as the model card says,
batched forward passes, Grad-CAM (or occlusion sensitivity for TorchScript models)."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
from monai.transforms import Compose, NormalizeIntensity, Resize, ScaleIntensityRange
from monai.visualize import GradCAM
from PIL import Image

from inference.loaders import LoadedModel


def pick_device(preference: str = "auto") -> torch.device:
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(preference)


@dataclass(frozen=True, slots=True)
class Prediction:
    probabilities: tuple[float, ...]  # by class index

    @property
    def top(self) -> int:
        return int(np.argmax(self.probabilities))


class Runner:
    """One loaded model on one device."""

    def __init__(self, model: LoadedModel, device: torch.device | None = None) -> None:
        self.model = model
        self.device = device or pick_device()
        self.network = model.network.to(self.device)
        spec = model.card.input
        self.transform = Compose(
            [
                Resize((spec.height, spec.width), mode="area"),
                ScaleIntensityRange(0.0, spec.scale, 0.0, 1.0),
                NormalizeIntensity(subtrahend=np.array(spec.mean), divisor=np.array(spec.std), channel_wise=True),
            ]
        )

    def prepare(self, rgb: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 -> the (3, h, w) float tensor the model takes."""
        channels_first = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float()
        prepared: torch.Tensor = self.transform(channels_first)
        return torch.as_tensor(prepared).float()

    def predict(self, images: list[np.ndarray]) -> list[Prediction]:
        """One forward pass for the whole batch."""
        if not images:
            return []
        batch = torch.stack([self.prepare(image) for image in images]).to(self.device)
        with torch.inference_mode():
            probabilities = torch.softmax(self.network(batch), dim=1).cpu().numpy()
        return [Prediction(tuple(float(p) for p in row)) for row in probabilities]

    def saliency(self, rgb: np.ndarray, class_index: int) -> np.ndarray:
        """A (h, w) map in [0, 1] of where the image drove ``class_index``."""
        return self.saliency_maps(rgb, (class_index,))[0]

    def saliency_maps(self, rgb: np.ndarray, classes: tuple[int, ...] | None = None) -> list[np.ndarray]:
        """One (h, w) map in [0, 1] per class (every class by default): Grad-CAM on the card's layer,
        else occlusion sensitivity, whose occluded copies serve every class at once."""
        batch = self.prepare(rgb)[None].to(self.device)
        wanted = classes if classes is not None else tuple(c.index for c in self.model.card.classes)
        layer = self.model.card.saliency_layer
        if layer and not self.model.scripted:
            cam = GradCAM(nn_module=self.network, target_layers=layer)
            heats = [torch.as_tensor(cam(x=batch, class_idx=index))[0, 0] for index in wanted]
        else:
            occluded = self._occlusion(batch)
            heats = [occluded[index] for index in wanted]
        return [_unit(heat.detach().float().cpu().numpy()) for heat in heats]

    def _occlusion(self, batch: torch.Tensor, patch: int = 20, stride: int = 10) -> torch.Tensor:
        """Occlusion sensitivity, (classes, h, w): how much each class's log-probability drops when a
        patch is covered with the image mean (MONAI's OcclusionSensitivity relies on tensor indexing
        newer torch deprecates)."""
        _, _, height, width = batch.shape
        corners = [(y, x) for y in range(0, height - patch + 1, stride) for x in range(0, width - patch + 1, stride)]
        fill = batch.mean(dim=(2, 3), keepdim=True)
        with torch.inference_mode():
            reference = torch.log_softmax(self.network(batch), dim=1)[0]
            heat = torch.zeros(reference.shape[0], height, width)
            hits = torch.zeros(height, width)
            for start in range(0, len(corners), 64):
                chunk = corners[start : start + 64]
                occluded = batch.repeat(len(chunk), 1, 1, 1)
                for n, (y, x) in enumerate(chunk):
                    occluded[n, :, y : y + patch, x : x + patch] = fill[0, :, :, :]
                # log-probabilities: a confident model's drop still shows; rises are not evidence
                drops = (reference[None] - torch.log_softmax(self.network(occluded), dim=1)).clamp(min=0).cpu()
                for (y, x), drop in zip(chunk, drops, strict=True):
                    heat[:, y : y + patch, x : x + patch] += drop[:, None, None]
                    hits[y : y + patch, x : x + patch] += 1
        return heat / hits.clamp(min=1)


def _unit(values: np.ndarray) -> np.ndarray:
    span = float(values.max() - values.min())
    return (values - values.min()) / span if span > 0 else np.zeros_like(values)


def saliency_png(rgb: np.ndarray, heat: np.ndarray, alpha: float = 0.45, largest: int = 320) -> bytes:
    """The heat map in red over the image (at most ``largest`` pixels a side), as PNG bytes."""
    base = Image.fromarray(rgb).convert("RGB")
    base.thumbnail((largest, largest), Image.Resampling.BILINEAR)
    heat_image = Image.fromarray((heat * 255).astype(np.uint8)).resize(base.size, Image.Resampling.BILINEAR)
    heat_rgb = np.zeros((base.size[1], base.size[0], 3), np.uint8)
    heat_rgb[..., 0] = np.asarray(heat_image)
    blended = Image.blend(base, Image.fromarray(heat_rgb), alpha)
    buffer = io.BytesIO()
    blended.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
