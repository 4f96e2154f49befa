"""Model loaders: each says whether it accepts a path and turns it into a runnable model.

- ``MonaiBundleLoader``: a MONAI bundle directory (``configs/metadata.json`` holding the card,
  ``configs/inference.json`` with a ``network_def``, weights in ``models/model.pt``) or a
  TorchScript ``models/model.ts``.
- ``ExportedProgramLoader``: a ``torch.export`` program (``.pt2``) with its card in ``<file>.card.json``.
- ``TorchScriptLoader``: a TorchScript file with its card in ``<file>.card.json``. TorchScript is
  deprecated upstream (torch 2.10+) but still what many MONAI bundles ship, so it loads, quietly.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from inference.model_card import ModelCard

CARD_KEY = "dermbridge_model_card"


@dataclass(frozen=True, slots=True)
class LoadedModel:
    card: ModelCard
    network: torch.nn.Module
    source: Path
    scripted: bool  # TorchScript or exported: no Grad-CAM hooks, saliency by integrated gradients
    weights_sha256: str = ""  # of the weights file: other weights under the same id and version are another Device


class Loader(Protocol):
    name: str

    def accepts(self, path: Path) -> bool: ...

    def load(self, path: Path) -> LoadedModel: ...


class MonaiBundleLoader:
    name = "monai-bundle"

    def accepts(self, path: Path) -> bool:
        return path.is_dir() and (path / "configs" / "metadata.json").is_file()

    def load(self, path: Path) -> LoadedModel:
        metadata = json.loads((path / "configs" / "metadata.json").read_text())
        if CARD_KEY not in metadata:
            raise ValueError(f"{path}: configs/metadata.json has no {CARD_KEY}")
        card = ModelCard.from_dict(metadata[CARD_KEY])
        scripted = path / "models" / "model.ts"
        if scripted.is_file():
            return LoadedModel(card, _load_torchscript(scripted), path, True, weights_sha256(scripted))
        from monai.bundle import ConfigParser

        parser = ConfigParser()
        parser.read_config(str(path / "configs" / "inference.json"))
        network = parser.get_parsed_content("network_def")
        state = torch.load(path / "models" / "model.pt", map_location="cpu", weights_only=True)
        network.load_state_dict(state)
        return LoadedModel(card, network, path, False, weights_sha256(path / "models" / "model.pt"))


class TorchScriptLoader:
    name = "torchscript"

    def accepts(self, path: Path) -> bool:
        return path.is_file() and path.suffix in (".ts", ".pt", ".pth") and _card_path(path).is_file()

    def load(self, path: Path) -> LoadedModel:
        card = ModelCard.from_dict(json.loads(_card_path(path).read_text()))
        return LoadedModel(card, _load_torchscript(path), path, True, weights_sha256(path))


class ExportedProgramLoader:
    name = "torch-export"

    def accepts(self, path: Path) -> bool:
        return path.is_file() and path.suffix == ".pt2" and _card_path(path).is_file()

    def load(self, path: Path) -> LoadedModel:
        card = ModelCard.from_dict(json.loads(_card_path(path).read_text()))
        module = torch.export.load(str(path)).module()
        return LoadedModel(card, module, path, True, weights_sha256(path))


def _load_torchscript(path: Path) -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`torch.jit", DeprecationWarning)
        module: torch.nn.Module = torch.jit.load(str(path), map_location="cpu")
    return module


def weights_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as weights:
        for block in iter(lambda: weights.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _card_path(path: Path) -> Path:
    return path.with_name(path.name + ".card.json")


LOADERS: list[Loader] = [MonaiBundleLoader(), ExportedProgramLoader(), TorchScriptLoader()]


def load_model(path: Path, loaders: list[Loader] | None = None) -> LoadedModel:
    """The model at ``path``, by the first loader that accepts it."""
    for loader in loaders or LOADERS:
        if loader.accepts(path):
            loaded = loader.load(path)
            with contextlib.suppress(NotImplementedError):  # exported programs are captured in eval mode
                loaded.network.eval()
            return loaded
    raise ValueError(
        f"no model loader accepts {path} (a MONAI bundle directory, or a .pt2 or TorchScript file with a card)"
    )
