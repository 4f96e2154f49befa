"""AuditEvents of legal holds and retention runs (auditevent.html; IHE BALP shapes): who, what, why.

References only, as every DermBridge AuditEvent: the reason a hold was placed or released is the one
free text, kept because an auditor needs it (who held the record, on whose instruction)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fhir_server.audit.events import ENTITY_TYPE, INTERACTION_SYSTEM, OBJECT_ROLE, REST_TYPE, requestor_agents

SUBTYPE_SYSTEM = "urn:dermbridge:audit-subtype"
SOURCE = {"observer": {"display": "DermBridge retention and legal hold"},
          "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4"}]}  # fmt: skip


def _event(
    subtype: dict[str, str], action: str, who: str, entities: list[dict[str, Any]], fhir_user: str | None = None
) -> dict[str, Any]:
    return {
        "resourceType": "AuditEvent",
        "type": REST_TYPE,
        "subtype": [subtype],
        "action": action,
        "recorded": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "outcome": "0",
        "agent": requestor_agents(who, fhir_user, None, action),
        "source": SOURCE,
        "entity": entities,
    }


def _patient(patient: str) -> dict[str, Any]:
    return {"what": {"reference": patient}, "type": {"system": ENTITY_TYPE, "code": "1"},
            "role": {"system": OBJECT_ROLE, "code": "1"}}  # fmt: skip


def hold_event(
    operation: str, flag: dict[str, Any], who: str, reason: str, fhir_user: str | None = None
) -> dict[str, Any]:
    """``$legal-hold`` (the Flag created) or ``$release-legal-hold`` (updated), by ``who`` (the client, acting
    for ``fhir_user`` if its token names one), for ``reason``."""
    entity = {"what": {"reference": f"Flag/{flag['id']}"}, "type": {"system": ENTITY_TYPE, "code": "2"},
              "detail": [{"type": "reason", "valueString": reason}]}  # fmt: skip
    action = "C" if operation == "legal-hold" else "U"
    subtype = {"system": SUBTYPE_SYSTEM, "code": operation}
    return _event(subtype, action, who, [entity, _patient(flag["subject"]["reference"])], fhir_user)


def deletion_event(reference: str, patients: set[str], who: str) -> dict[str, Any]:
    """One resource deleted by the retention job, as a REST delete would be recorded."""
    entities = [{"what": {"reference": reference}, "type": {"system": ENTITY_TYPE, "code": "2"}}]
    entities += [_patient(f"Patient/{p}") for p in sorted(patients)]
    return _event({"system": INTERACTION_SYSTEM, "code": "delete"}, "D", who, entities)


def run_event(who: str, counts: dict[str, int]) -> dict[str, Any]:
    """One retention run, with its counts (``deleted``, ``held``, ...) as entity details."""
    details = [{"type": name, "valueString": str(value)} for name, value in sorted(counts.items())]
    entity = {"what": {"display": "retention run"}, "type": {"system": ENTITY_TYPE, "code": "4"}, "detail": details}
    return _event({"system": SUBTYPE_SYSTEM, "code": "retention-run"}, "D", who, [entity])
