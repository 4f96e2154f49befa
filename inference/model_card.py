"""Model cards: what a model is for, what it takes, what it answers, and how far to trust it.

A card travels with the model (``configs/metadata.json`` of a MONAI bundle, under the key
``dermbridge_model_card``, or a ``<model>.card.json`` file next to a TorchScript file).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from inference.accepted_inputs import AcceptedInputs

SNOMED = "http://snomed.info/sct"
# The case conclusion's order of concern, highest first (a card may give its own): a lesion in a
# higher tier decides the case whatever else the other lesions and images show.
RISK_HIERARCHY = ("melanoma", "squamous-cell-carcinoma", "basal-cell-carcinoma", "other-malignant",
                  "pre-malignant", "benign")  # fmt: skip


@dataclass(frozen=True, slots=True)
class OutputClass:
    index: int  # position in the model's output vector
    code: str  # SNOMED CT concept id
    display: str
    threshold: float  # a probability at or above it is interpreted as positive
    risk_tier: str = "benign"  # one of the card's risk_hierarchy


@dataclass(frozen=True, slots=True)
class InputSpec:
    height: int
    width: int
    colour_space: str = "RGB"
    scale: float = 255.0  # pixel values are divided by it first
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)  # then normalised channel-wise
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)


@dataclass(frozen=True, slots=True)
class ModelCard:
    id: str
    version: str
    name: str
    intended_use: str
    input: InputSpec
    classes: tuple[OutputClass, ...]
    limitations: tuple[str, ...] = ()
    performance: tuple[dict[str, Any], ...] = ()  # e.g. {"subgroup": "Fitzpatrick I-III", "metric": ..., "value": ...}
    training: str = ""
    saliency_layer: str | None = None  # a module name for Grad-CAM; None: integrated gradients
    clinical_use: bool = False
    contraindications: tuple[str, ...] = ()  # where it must not be used (sites, ages, image kinds)
    fitzpatrick_coverage: str = ""  # which skin types the training and validation data represent
    risk_hierarchy: tuple[str, ...] = RISK_HIERARCHY
    extra: dict[str, Any] = field(default_factory=dict)
    # -- admission: the inputs the model was built for (inference.admission) --
    accepts: AcceptedInputs = field(default_factory=AcceptedInputs)

    @property
    def key(self) -> str:
        return f"{self.id}@{self.version}"

    def output(self, index: int) -> OutputClass:
        return next(c for c in self.classes if c.index == index)

    def rank(self, tier: str) -> int:
        """Higher is more concerning; a tier the hierarchy does not name ranks below all."""
        return len(self.risk_hierarchy) - self.risk_hierarchy.index(tier) if tier in self.risk_hierarchy else 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        try:
            spec = dict(data["input"])
            spec["mean"], spec["std"] = tuple(spec.get("mean", (0, 0, 0))), tuple(spec.get("std", (1, 1, 1)))
            classes = tuple(OutputClass(**c) for c in data["classes"])
            if sorted(c.index for c in classes) != list(range(len(classes))):
                raise ValueError("class indexes must be 0..n-1")
            hierarchy = tuple(data.get("risk_hierarchy", RISK_HIERARCHY))
            unranked = [c.display for c in classes if c.risk_tier not in hierarchy]
            if unranked:
                raise ValueError(f"classes without a tier of the risk hierarchy: {unranked}")
            return cls(
                id=str(data["id"]),
                version=str(data["version"]),
                name=str(data["name"]),
                intended_use=str(data["intended_use"]),
                input=InputSpec(**spec),
                classes=classes,
                limitations=tuple(data.get("limitations", ())),
                performance=tuple(data.get("performance", ())),
                training=str(data.get("training", "")),
                saliency_layer=data.get("saliency_layer"),
                clinical_use=bool(data.get("clinical_use", False)),
                contraindications=tuple(data.get("contraindications", ())),
                fitzpatrick_coverage=str(data.get("fitzpatrick_coverage", "")),
                risk_hierarchy=hierarchy,
                extra=dict(data.get("extra", {})),
                accepts=AcceptedInputs.from_dict(dict(data.get("accepts", {}))),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a valid model card: {exc}") from exc
