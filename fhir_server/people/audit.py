"""AuditEvents of people signing in and out (DICOM PS3.15 A.5.3.11 "User Authentication", subtypes
110122 Login and 110123 Logout; IHE BALP): the user as the requestor agent (their Practitioner when known,
else the name typed), the caller's address, the reason of a failure. Never a password or a code."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fhir_server.security.refusal_audit import summarised
from fhir_server.security.refusals import RefusalSummary

DCM = "http://dicom.nema.org/resources/ontology/DCM"
SUBTYPES = {"login": ("110122", "Login"), "logout": ("110123", "Logout")}


def sign_in_event(
    kind: str, *, username: str, fhir_user: str | None, address: str | None, failure: str | None = None
) -> dict[str, Any]:
    code, display = SUBTYPES[kind]
    who: dict[str, Any] = {"reference": fhir_user} if fhir_user else {}
    who["display"] = f"user {username[:64]}"
    agent: dict[str, Any] = {"who": who, "requestor": True, "altId": username[:64]}
    if address:
        agent["network"] = {"address": address, "type": "2"}
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": {"system": DCM, "code": "110114", "display": "User Authentication"},
        "subtype": [{"system": DCM, "code": code, "display": display}],
        "action": "E",
        "recorded": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "outcome": "4" if failure else "0",
        "agent": [agent],
        "source": {
            "observer": {"display": "DermBridge sign-in"},
            "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4"}],
        },
    }
    if failure:
        event["outcomeDesc"] = failure
    return event


def sign_in_summary(summary: RefusalSummary) -> dict[str, Any]:
    """One AuditEvent for ``summary.count`` more refused sign-ins of one name and address, over their period
    (:mod:`fhir_server.security.refusal_audit`)."""
    group = summary.group
    event = sign_in_event("login", username=group.client_id, fhir_user=None, address=group.address, failure="-")
    return summarised(event, summary, "sign-ins")
