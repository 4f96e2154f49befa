"""A DICOM audit trail in the spirit of ATNA (RFC 3881 / DICOM PS3.15 A.5): who, what, when,
from where, and the outcome of every association and DIMSE operation.

Records are appended as JSON lines to ``<data>/audit/dicom.jsonl`` (a local log that needs no
database), and each one is handed to ``sink`` as a FHIR AuditEvent (DICOM PS3.15 audit message
codes) for the tenant's hash-chained audit trail.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DCM = "http://dicom.nema.org/resources/ontology/DCM"
# action -> (event type, subtype or None, FHIR AuditEvent.action)
_CODES: dict[str, tuple[tuple[str, str], tuple[str, str] | None, str]] = {
    "association": (("110114", "User Authentication"), ("110122", "Login"), "E"),
    "association-end": (("110114", "User Authentication"), ("110123", "Logout"), "E"),
    "C-ECHO": (("110100", "Application Activity"), None, "E"),
    "C-STORE": (("110104", "DICOM Instances Transferred"), None, "C"),
    "C-FIND": (("110112", "Query"), None, "E"),
    "C-GET": (("110104", "DICOM Instances Transferred"), None, "R"),
    "C-MOVE": (("110104", "DICOM Instances Transferred"), None, "R"),
}
Sink = Callable[[str | None, dict[str, Any], bool], None]  # (tenant, AuditEvent, wait until durable)


def audit_event(entry: dict[str, Any]) -> dict[str, Any]:
    """A DICOM audit record as a FHIR AuditEvent: no patient data, only AE titles, address, UIDs."""
    action = entry["action"]
    kind = "association-end" if action == "association" and entry["outcome"] in ("released", "aborted") else action
    event_type, subtype, fhir_action = _CODES.get(kind, (("110100", "Application Activity"), None, "E"))
    failed = entry["outcome"] in ("failure", "rejected")
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": {"system": DCM, "code": event_type[0], "display": event_type[1]},
        "action": fhir_action,
        "recorded": entry["recorded"],
        "outcome": "4" if failed else "0",
        "agent": [
            {"who": {"display": f"AE {entry['callingAE']}"}, "altId": entry["callingAE"], "requestor": True,
             "network": {"address": entry["peer"].rsplit(":", 1)[0], "type": "2"}},
            {"who": {"display": f"AE {entry['calledAE']} (DermBridge)"}, "altId": entry["calledAE"],
             "requestor": False},
        ],
        "source": {"observer": {"display": "DermBridge DICOM node"},
                   "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4"}]},
    }  # fmt: skip
    if subtype is not None:
        event["subtype"] = [{"system": DCM, "code": subtype[0], "display": subtype[1]}]
    else:
        event["subtype"] = [{"system": "urn:dermbridge:dimse", "code": action}]
    description = f"{action} {entry['outcome']}" + (f": {entry['detail']}" if entry["detail"] else "")
    if failed or entry["detail"]:
        event["outcomeDesc"] = description[:1000]
    return event


class DicomAudit:
    def __init__(self, directory: Path, sink: Sink | None = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "dicom.jsonl"
        self.sink = sink
        self._lock = threading.Lock()
        self.observers: list[Callable[[dict[str, Any]], None]] = []  # each record, once (association_log)

    def record(self, entry: dict[str, Any], *, wait: bool = True) -> None:
        """Log a record and hand its AuditEvent to the sink; ``wait``: return once it is durable
        (an operation's answer waits for it; a notification's record need not)."""
        self.log(entry)
        if self.sink is not None:
            self.sink(entry["tenant"], audit_event(entry), wait)

    @staticmethod
    def entry(
        *, action: str, outcome: str, calling_ae: str, called_ae: str, peer: str, tenant: str | None, detail: str = ""
    ) -> dict[str, Any]:
        return {
            "recorded": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "action": action,
            "outcome": outcome,
            "callingAE": calling_ae,
            "calledAE": called_ae,
            "peer": peer,
            "tenant": tenant,
            "detail": detail,
        }

    def log(self, entry: dict[str, Any]) -> None:
        """The JSON-lines record only (its AuditEvent is written by whoever called)."""
        line = json.dumps(entry, separators=(",", ":")) + "\n"
        with self._lock, self.path.open("a", encoding="utf-8") as handle:
            handle.write(line)
        for observer in self.observers:
            try:
                observer(entry)
            except Exception:  # a notification: an observer's error never touches the association
                logging.getLogger(__name__).exception("a DICOM audit observer failed")

    def entries(self) -> list[dict[str, str]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line]
