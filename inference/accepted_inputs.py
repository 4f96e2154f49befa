"""The inputs a model card says its model was built for (see ``inference.admission``)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420")


@dataclass(frozen=True, slots=True)
class AcceptedInputs:
    """The model card's accepted inputs; an empty tuple accepts any value of that attribute."""

    sop_classes: tuple[str, ...] = ()
    modalities: tuple[str, ...] = ()
    photometric_interpretations: tuple[str, ...] = COLOUR
    body_regions: tuple[str, ...] = ()  # SNOMED CT codes of the Anatomic Region Sequence
    excluded_body_regions: tuple[str, ...] = ()  # SNOMED CT codes never accepted (contraindicated sites)
    min_rows: int = 0
    min_columns: int = 0
    quality_check: bool = True  # run the pixel checks of inference.quality
    min_age_years: int = 0  # patients younger at acquisition are contraindicated (inference.contraindications)
    dermoscopy_only: bool = False  # clinical overview photographs are contraindicated (inference.contraindications)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AcceptedInputs:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown accepted-input keys: {sorted(unknown)}")
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)
