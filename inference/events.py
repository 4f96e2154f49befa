"""AuditEvents of the AI step (DICOM "Application Activity"): what was analysed, or refused, or failed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fhir_server.audit.events import DCM, ENTITY_TYPE, OBJECT_ROLE


def analysis_event(patient_id: str, media_id: str, outcome: str, description: str) -> dict[str, Any]:
    return {
        "resourceType": "AuditEvent",
        "type": {"system": DCM, "code": "110100", "display": "Application Activity"},
        "subtype": [{"system": "urn:dermbridge:audit", "code": "ai-analysis", "display": "AI analysis"}],
        "action": "E",
        "recorded": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "outcome": outcome,
        "outcomeDesc": description,
        "agent": [{"who": {"display": "DermBridge inference worker"}, "requestor": False}],
        "source": {"observer": {"display": "DermBridge inference worker"},
                   "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4"}]},
        "entity": [
            {"what": {"reference": f"Media/{media_id}"}, "type": {"system": ENTITY_TYPE, "code": "2"}},
            {"what": {"reference": f"Patient/{patient_id}"}, "type": {"system": ENTITY_TYPE, "code": "1"},
             "role": {"system": OBJECT_ROLE, "code": "1"}},
        ],
    }  # fmt: skip
