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
PRE_MALIGNANT, BENIGN = "pre-malignant", "benign"  # every other tier of a hierarchy is a malignant one
INDETERMINATE = "indeterminate"  # a benign call withheld: a concerning class lies just under its threshold


def hierarchy_problem(hierarchy: tuple[str, ...]) -> str | None:
    """Why a risk hierarchy would let a lower risk decide a case (malignant tiers, then pre-malignant,
    then benign), or None."""
    if len(set(hierarchy)) != len(hierarchy):
        return f"risk hierarchy names a tier twice: {list(hierarchy)}"
    if INDETERMINATE in hierarchy:
        return f"{INDETERMINATE!r} is not a tier of the risk hierarchy (it is the band under a threshold)"
    order = [2 if t == BENIGN else 1 if t == PRE_MALIGNANT else 0 for t in hierarchy]
    if order != sorted(order):
        return (
            f"risk hierarchy {list(hierarchy)} ranks a lower risk above a higher one: every malignant tier "
            f"must come before {PRE_MALIGNANT!r}, and {PRE_MALIGNANT!r} before {BENIGN!r}"
        )
    return None


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
    # e.g. {"subgroup": "Fitzpatrick I-III", "metric": ..., "value": ...}; an entry with metric sensitivity or
    # specificity, a condition (risk tier) and a stratum is a claim checked for drift (fhir_server.outcomes.claims)
    performance: tuple[dict[str, Any], ...] = ()
    training: str = ""
    saliency_layer: str | None = None  # a module name for Grad-CAM; None: integrated gradients
    clinical_use: bool = False
    contraindications: tuple[str, ...] = ()  # where it must not be used (sites, ages, image kinds)
    fitzpatrick_coverage: str = ""  # which skin types the training and validation data represent
    risk_hierarchy: tuple[str, ...] = RISK_HIERARCHY
    extra: dict[str, Any] = field(default_factory=dict)
    # a benign call is withheld while a malignant or pre-malignant class is within this of its threshold
    indeterminate_margin: float = 0.1
    calibrated: bool = False  # True only if the scores were calibrated (else: uncalibrated softmax scores)
    regulatory_clearance: str | None = None  # e.g. an FDA 510(k) number or a CE certificate id
    # -- admission: the inputs the model was built for (inference.admission) --
    accepts: AcceptedInputs = field(default_factory=AcceptedInputs)

    def __post_init__(self) -> None:
        problem = hierarchy_problem(self.risk_hierarchy)
        if problem:
            raise ValueError(problem)
        if not 0.0 <= self.indeterminate_margin < 1.0:
            raise ValueError(f"indeterminate_margin must be in [0, 1): {self.indeterminate_margin}")

    @property
    def key(self) -> str:
        return f"{self.id}@{self.version}"

    def output(self, index: int) -> OutputClass:
        return next(c for c in self.classes if c.index == index)

    def rank(self, tier: str) -> int:
        """Higher is more concerning; a tier the hierarchy does not name ranks below all. An
        indeterminate outcome ranks just above benign (below every positive concerning finding)."""
        if tier == INDETERMINATE:
            return 2 * self.rank(BENIGN) + 1 if BENIGN in self.risk_hierarchy else 1
        return 2 * (len(self.risk_hierarchy) - self.risk_hierarchy.index(tier)) if tier in self.risk_hierarchy else 0

    def concerning(self, tier: str) -> bool:
        """A malignant or pre-malignant tier."""
        return tier in self.risk_hierarchy and tier != BENIGN

    @staticmethod
    def malignant(tier: str) -> bool:
        return tier not in (BENIGN, PRE_MALIGNANT, INDETERMINATE)

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
                indeterminate_margin=float(data.get("indeterminate_margin", 0.1)),
                calibrated=bool(data.get("calibrated", False)),
                regulatory_clearance=data.get("regulatory_clearance") or None,
                accepts=AcceptedInputs.from_dict(dict(data.get("accepts", {}))),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a valid model card: {exc}") from exc
