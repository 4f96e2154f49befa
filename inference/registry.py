"""The models this server runs: loaded by configuration through the loader registry, the bundled
demonstration model when none is configured."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from inference.demo import DEMO_DIR
from inference.loaders import LoadedModel, load_model
from inference.pipeline import Runner, pick_device

log = logging.getLogger(__name__)


class ModelRegistry:
    def __init__(self, models: list[LoadedModel]) -> None:
        keys = [m.card.key for m in models]
        if len(set(keys)) != len(keys):
            raise ValueError(f"the same model id and version is configured twice: {keys}")
        self.models = models

    @classmethod
    def load(cls, paths: list[Path] | None = None) -> ModelRegistry:
        chosen = paths or [DEMO_DIR]
        models = [load_model(Path(p)) for p in chosen]
        for model in models:
            note = "" if model.card.clinical_use else " (NOT FOR CLINICAL USE)"
            log.info("model %s %s loaded from %s%s", model.card.id, model.card.version, model.source, note)
        return cls(models)

    def runners(self, device: str = "auto") -> list[Runner]:
        chosen: torch.device = pick_device(device)
        return [Runner(model, chosen) for model in self.models]
