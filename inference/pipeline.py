"""Images to class probabilities and saliency maps: MONAI pre-processing as the model card says,
batched forward passes, and for the top finding a saliency map: Grad-CAM on the layer the card names,
else integrated gradients (Sundararajan et al. 2017) from a lesion-free baseline."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
from monai.transforms import Compose, NormalizeIntensity, Resize, ScaleIntensityRange
from monai.utils import convert_to_tensor
from monai.visualize import GradCAM
from PIL import Image, ImageFilter

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
        prepared = convert_to_tensor(self.transform(channels_first), dtype=torch.float32, track_meta=False)
        return torch.as_tensor(prepared)

    def predict(self, images: list[np.ndarray]) -> list[Prediction]:
        """One forward pass for the whole batch."""
        if not images:
            return []
        batch = torch.stack([self.prepare(image) for image in images]).to(self.device)
        with torch.inference_mode():
            probabilities = torch.softmax(self.network(batch), dim=1).cpu().numpy()
        return [Prediction(tuple(float(p) for p in row)) for row in probabilities]

    def saliency(self, rgb: np.ndarray, class_index: int) -> np.ndarray:
        """A (h, w) map in [0, 1] of where the image drove ``class_index`` (at the model's input size)."""
        batch = self.prepare(rgb)[None].to(self.device)
        layer = self.model.card.saliency_layer
        if layer and not self.model.scripted:
            cam = GradCAM(nn_module=self.network, target_layers=layer)
            heat = torch.as_tensor(cam(x=batch, class_idx=class_index))[0, 0]
        else:
            heat = self._integrated_gradients(batch, class_index)
        return _unit(heat.detach().float().cpu().numpy())

    def _integrated_gradients(self, batch: torch.Tensor, class_index: int, steps: int = 24) -> torch.Tensor:
        """Integrated gradients of the class's logit margin (its logit less the log-sum-exp of the
        others: unlike a probability of 1.00 it does not saturate) along the straight path from a
        baseline of the image's median colour, the skin around the lesion, to the image. Only positive
        evidence is kept. Where the image equals the skin the attribution is zero by construction, so
        the map shows what in the image, compared with plain skin, drove the finding."""
        baseline = batch.flatten(2).median(dim=2).values[:, :, None, None].expand_as(batch)
        alphas = torch.linspace(1 / steps, 1, steps, device=batch.device)[:, None, None, None]
        path = (baseline + alphas * (batch - baseline)).detach().requires_grad_(True)
        with torch.enable_grad():
            margin = _margins(self.network(path))[:, class_index]
            (gradients,) = torch.autograd.grad(margin.sum(), path)
        attribution = ((batch - baseline) * gradients.mean(dim=0, keepdim=True)).sum(dim=1)[0]
        return attribution.clamp(min=0)


def _margins(logits: torch.Tensor) -> torch.Tensor:
    """Per class, its logit less the log-sum-exp of the other classes' (the log-odds of a softmax)."""
    classes = logits.shape[1]
    others = [torch.logsumexp(torch.cat([logits[:, :c], logits[:, c + 1 :]], dim=1), dim=1) for c in range(classes)]
    return logits - torch.stack(others, dim=1)


def _unit(values: np.ndarray) -> np.ndarray:
    """Scaled to [0, 1] by its 99th percentile (one hot pixel does not darken the rest)."""
    top = float(np.percentile(values, 99)) if values.size else 0.0
    return np.clip(values / top, 0, 1) if top > 0 else np.zeros_like(values)


def saliency_png(rgb: np.ndarray, heat: np.ndarray, largest: int = 320) -> bytes:
    """The heat map over the image (at most ``largest`` pixels a side), as PNG bytes: red to yellow
    and more opaque where the evidence is stronger; where there is none the image shows unchanged."""
    base = Image.fromarray(rgb).convert("RGB")
    base.thumbnail((largest, largest), Image.Resampling.BILINEAR)
    smooth = Image.fromarray((heat * 255).astype(np.uint8)).filter(ImageFilter.BoxBlur(1))
    level = np.asarray(smooth.resize(base.size, Image.Resampling.BILINEAR), np.float32)[..., None] / 255
    colour = np.concatenate([np.full_like(level, 255), 255 * level, np.zeros_like(level)], axis=-1)
    opacity = 0.8 * np.sqrt(level)
    blended = np.asarray(base, np.float32) * (1 - opacity) + colour * opacity
    buffer = io.BytesIO()
    Image.fromarray(blended.astype(np.uint8)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
