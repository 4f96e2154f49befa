"""The AuditEvent of forwarding (DICOM PS3.15 A.5.3.6 "Export", 110106; IHE ATNA): which study's objects left
for which destination (its AE title and address, Destination Role ID 110152), from DermBridge (Source Role ID
110153), how many were stored and how many failed. UIDs and references only, no patient data."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from dicom_node.forwarding.config import Destination
from fhir_server.audit.events import DCM, ENTITY_TYPE, OBJECT_ROLE, requestor_agents

SUBTYPE = {"system": "urn:dermbridge:audit", "code": "dicom-forwarding", "display": "DICOM forwarding"}
SECURITY_SOURCE = "http://terminology.hl7.org/CodeSystem/security-source-type"


def _role(code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": DCM, "code": code, "display": display}]}


def export_event(
    destination: Destination, calling_ae: str, study: str, patient: str | None, stored: int, failed: int,
    error: str = "",
) -> dict[str, Any]:  # fmt: skip
    """One attempt at sending a study's objects to one destination: outcome 0 all stored, 4 some failed, 8 none."""
    outcome = "0" if not failed else ("4" if stored else "8")
    description = f"{stored} object(s) of the study stored by {destination.ae_title}, {failed} failed"
    entities: list[dict[str, Any]] = [{
        "what": {"identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{study}"}},
        "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
        "role": {"system": OBJECT_ROLE, "code": "3", "display": "Report"},
    }]  # fmt: skip
    if patient:
        entities.append({"what": {"reference": f"Patient/{patient}"},
                         "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
                         "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"}})  # fmt: skip
    return {
        "resourceType": "AuditEvent",
        "type": {"system": DCM, "code": "110106", "display": "Export"},
        "subtype": [SUBTYPE],
        "action": "R",
        "recorded": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "outcome": outcome,
        "outcomeDesc": (description + (f" ({error})" if error else ""))[:1000],
        "agent": [
            {"type": _role("110153", "Source Role ID"), "who": {"display": f"AE {calling_ae} (DermBridge)"},
             "altId": calling_ae, "requestor": True},
            {"type": _role("110152", "Destination Role ID"), "who": {"display": f"AE {destination.ae_title}"},
             "altId": destination.ae_title, "requestor": False,
             "network": {"address": destination.host, "type": "2" if destination.host[:1].isdigit() else "1"}},
        ],
        "source": {"observer": {"display": "DermBridge DICOM forwarding"},
                   "type": [{"system": SECURITY_SOURCE, "code": "4"}]},
        "entity": entities,
    }  # fmt: skip


RETRY_SUBTYPE = {"system": "urn:dermbridge:audit", "code": "dicom-forwarding-retry", "display": "Forwarding retry"}


def retry_event(job: dict[str, Any], who: str, fhir_user: str | None = None) -> dict[str, Any]:
    """An operator queued a forwarding job again (``POST .../jobs/{id}/$retry``): who (the client and the user it
    acts for, as every request's AuditEvent), which job and study."""
    return {
        "resourceType": "AuditEvent",
        "type": {"system": DCM, "code": "110106", "display": "Export"},
        "subtype": [RETRY_SUBTYPE],
        "action": "E",
        "recorded": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "outcome": "0",
        "outcomeDesc": f"forwarding job {job['id']} to {job.get('destinationAE', '?')} queued again"[:1000],
        "agent": requestor_agents(who[:200], fhir_user),
        "source": {"observer": {"display": "DermBridge DICOM forwarding"},
                   "type": [{"system": SECURITY_SOURCE, "code": "4"}]},
        "entity": [{"what": {"identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{job['study']}"}},
                    "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"}}],
    }  # fmt: skip
