"""The AuditEvent of a notification (DICOM "Application Activity" / export): which Subscription,
about which resource, to which endpoint, and whether it went out. References only, no content."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fhir_server.audit.events import DCM, ENTITY_TYPE

SUBTYPE = {"system": "urn:dermbridge:audit", "code": "notification", "display": "Notification sent"}


def notification_event(
    subscription_id: str, owner: str, about: str, endpoint: str, outcome: str, description: str
) -> dict[str, Any]:
    return {
        "resourceType": "AuditEvent",
        "type": {"system": DCM, "code": "110106", "display": "Export"},
        "subtype": [SUBTYPE],
        "action": "E",
        "recorded": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "outcome": outcome,
        "outcomeDesc": description[:1000],
        "agent": [
            {"who": {"display": "DermBridge subscription worker"}, "requestor": False},
            {"who": {"display": owner}, "requestor": True},
            {
                "who": {"display": endpoint[:500]},
                "requestor": False,
                "type": {
                    "coding": [
                        {
                            "system": "http://dicom.nema.org/resources/ontology/DCM",
                            "code": "110152",
                            "display": "Destination Role ID",
                        }
                    ]
                },
            },
        ],
        "source": {
            "observer": {"display": "DermBridge subscription worker"},
            "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4"}],
        },
        "entity": [
            {"what": {"reference": f"Subscription/{subscription_id}"}, "type": {"system": ENTITY_TYPE, "code": "2"}},
            {"what": {"reference": about}, "type": {"system": ENTITY_TYPE, "code": "2"}},
        ],
    }


BIND_SUBTYPE = {"system": "urn:dermbridge:audit", "code": "websocket-bind", "display": "Websocket bind"}


def binding_event(subscription_id: str, client: str, peer: str, outcome: str, description: str) -> dict[str, Any]:
    """A ``bind {id}`` on a websocket (subscription.html, channel "websocket"), granted (``0``) or refused (``4``)."""
    event = notification_event(subscription_id, client, f"Subscription/{subscription_id}", peer, outcome, description)
    event["type"] = {"system": DCM, "code": "110100", "display": "Application Activity"}
    event["subtype"] = [BIND_SUBTYPE]
    event["entity"] = event["entity"][:1]
    return event
