"""The canonical URLs of DermBridge's profiles (StructureDefinitions, profiling.html) and how a writer
declares one in ``meta.profile`` (resource.html#Meta).

The URLs live here, at the bottom of the import graph, because the writers (DICOM sync, inference, the
review workflow) sit in every layer; the StructureDefinitions themselves are built in
``conformance.profiles`` and handed to the validator by the composition root.
"""

from __future__ import annotations

from typing import Any

CANONICAL_BASE = "https://dermbridge.org/fhir"  # shared with the shipped ValueSets and ConceptMaps
STRUCTURE_DEFINITION = f"{CANONICAL_BASE}/StructureDefinition"

CASE_REPORT = f"{STRUCTURE_DEFINITION}/dermbridge-case-report"
LESION = f"{STRUCTURE_DEFINITION}/dermbridge-lesion"
AI_RISK_RESULT = f"{STRUCTURE_DEFINITION}/dermbridge-ai-risk-result"
AI_PREDICTED_DIAGNOSIS = f"{STRUCTURE_DEFINITION}/dermbridge-ai-predicted-diagnosis"
CLINICIAN_FINDING = f"{STRUCTURE_DEFINITION}/dermbridge-clinician-finding"
AI_DEVICE = f"{STRUCTURE_DEFINITION}/dermbridge-ai-device"
AI_PROVENANCE = f"{STRUCTURE_DEFINITION}/dermbridge-ai-provenance"
DERMOSCOPIC_MEDIA = f"{STRUCTURE_DEFINITION}/dermbridge-dermoscopic-media"
DERMOSCOPIC_STUDY = f"{STRUCTURE_DEFINITION}/dermbridge-dermoscopic-imaging-study"
AI_ANALYSIS_CONSENT = f"{STRUCTURE_DEFINITION}/dermbridge-ai-analysis-consent"
REVIEW_TASK = f"{STRUCTURE_DEFINITION}/dermbridge-review-task"


def declare(resource: dict[str, Any], *profiles: str) -> dict[str, Any]:
    """Adds ``profiles`` to the resource's ``meta.profile`` (once each) and returns the resource."""
    meta = resource.setdefault("meta", {})
    claimed = meta.setdefault("profile", [])
    claimed.extend(p for p in profiles if p not in claimed)
    return resource
