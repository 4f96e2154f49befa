"""The value sets DermBridge's profiles bind to that no other content ships (valueset.html)."""

from __future__ import annotations

from typing import Any

from fhir_server.declared_profiles import CANONICAL_BASE
from inference.findings import INDETERMINATE_READING, INTERPRETATION, NEGATIVE, POSITIVE

AI_RISK_INTERPRETATION = f"{CANONICAL_BASE}/ValueSet/ai-risk-interpretation"


def ai_risk_interpretation() -> dict[str, Any]:
    """What an AI risk result may say of its score against the class's threshold (``inference.findings``)."""
    return {
        "resourceType": "ValueSet",
        "id": "ai-risk-interpretation",
        "url": AI_RISK_INTERPRETATION,
        "version": "1.0.0",
        "name": "AiRiskInterpretation",
        "title": "AI risk result interpretation",
        "status": "active",
        "publisher": "DermBridge",
        "description": "Positive at or above the class's decision threshold, Indeterminate in the model card's "
        "band just under it, Negative otherwise (v3 ObservationInterpretation).",
        "compose": {
            "include": [
                {"system": INTERPRETATION, "concept": [{"code": c["code"], "display": c["display"]}
                                                       for c in (POSITIVE, INDETERMINATE_READING, NEGATIVE)]}
            ]
        },
    }  # fmt: skip


def all_value_sets() -> list[dict[str, Any]]:
    return [ai_risk_interpretation()]
