"""The model card's performance figures a model is held to, read from its AI Model-Card
``DocumentReference`` (HL7 AI Transparency IG; the Device's ``modelCardDescription`` extension), whose JSON
attachment is the card itself (``inference.model_card``).

A card entry is a claim when it names a ``metric`` (``sensitivity`` or ``specificity``), a ``condition``
(``melanoma``, ``squamous-cell-carcinoma``, ``basal-cell-carcinoma``) and a numeric ``value``; its
``stratum`` (optional: the whole population) maps a dimension of ``$ai-performance`` to the values it
covers, e.g. ``{"subgroup": "Fitzpatrick V-VI", "metric": "sensitivity", "condition": "melanoma",
"value": 0.85, "stratum": {"fitzpatrick": ["V", "VI"]}}``. Other entries (e.g. an accuracy) are not claims
this server can check.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from fhir_server.outcomes.codes import CONDITIONS
from fhir_server.outcomes.report import DIMENSIONS
from fhir_server.repository import Repository

# the IG's extension (inference.governance writes it; this package may not import inference)
MODEL_CARD_EXTENSION = "http://hl7.org/fhir/uv/aitransparency/StructureDefinition/aitransparency.modelCardDescription"
METRICS = ("sensitivity", "specificity")


@dataclass(frozen=True, slots=True)
class Claim:
    metric: str
    condition: str
    value: float
    dimension: str  # "all", or one of report.DIMENSIONS
    values: tuple[str, ...]
    label: str  # the card's subgroup, in its words

    @property
    def key(self) -> str:
        return f"{self.condition}/{self.metric}/{self.dimension}={','.join(self.values)}"


def claim_of(entry: Any) -> Claim | None:
    """A card's performance entry as a claim, or None when it is not one this server can check."""
    if not isinstance(entry, dict) or entry.get("metric") not in METRICS or entry.get("condition") not in CONDITIONS:
        return None
    value = entry.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        return None
    stratum = entry.get("stratum") or {}
    if not isinstance(stratum, dict) or len(stratum) > 1:
        return None
    dimension, values = next(iter(stratum.items()), ("all", ["all"]))
    values = [values] if isinstance(values, str) else values
    if (dimension != "all" and dimension not in DIMENSIONS) or not isinstance(values, list) or not values:
        return None
    label = str(entry.get("subgroup") or ("all" if dimension == "all" else f"{dimension} {', '.join(values)}"))
    return Claim(entry["metric"], entry["condition"], float(value), dimension, tuple(str(v) for v in values), label)


def _card_json(document: dict[str, Any]) -> dict[str, Any]:
    for content in document.get("content") or []:
        attachment = (content or {}).get("attachment") or {}
        if attachment.get("contentType") == "application/json" and attachment.get("data"):
            try:
                found = json.loads(base64.b64decode(attachment["data"]))
            except (binascii.Error, ValueError):
                return {}
            return found if isinstance(found, dict) else {}
    return {}


async def model_claims(repo: Repository, device: dict[str, Any]) -> list[Claim]:
    """The claims of the card the model Device refers to (none without a card)."""
    for extension in device.get("extension") or []:
        reference = str(((extension or {}).get("valueReference") or {}).get("reference", ""))
        if extension.get("url") == MODEL_CARD_EXTENSION and reference.startswith("DocumentReference/"):
            document = await repo.current("DocumentReference", reference.split("/", 1)[1])
            card = _card_json(document or {})
            return [c for c in (claim_of(e) for e in card.get("performance") or []) if c is not None]
    return []
