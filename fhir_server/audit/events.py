"""AuditEvents for FHIR REST interactions (auditevent.html; IHE BALP): who, what, when, outcome,
and the patient concerned. No personal data beyond references."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

REST_TYPE = {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest",
             "display": "RESTful Operation"}  # fmt: skip
INTERACTION_SYSTEM = "http://hl7.org/fhir/restful-interaction"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
ACTIONS = {"create": "C", "read": "R", "vread": "R", "search-type": "E", "search-system": "E", "history": "R",
           "update": "U", "patch": "U", "delete": "D", "transaction": "E", "batch": "E", "operation": "E",
           "capabilities": "R"}  # fmt: skip


# R4 AuditEvent.agent.who: Reference(PractitionerRole | Practitioner | Organization | Device | Patient | RelatedPerson)
AGENT_REFERENCE = re.compile(
    r"^(https?://[^\s]{1,400}/)?(Practitioner|PractitionerRole|Patient|RelatedPerson)/[A-Za-z0-9\-.]{1,64}$"
)
ROLE_CLASS = "http://terminology.hl7.org/CodeSystem/v3-RoleClass"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
SOURCE_ROLE = {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110153", "display": "Source Role ID"}


@dataclass(frozen=True, slots=True)
class Requestor:
    """Who asks: the client (its id, or the user's subject for an external provider's token) and the user its
    token acts for (the SMART ``fhirUser`` claim), if any."""

    client: str
    fhir_user: str | None = None


def requestor_agents(
    client: str, fhir_user: str | None, address: str | None = None, action: str = "E"
) -> list[dict[str, Any]]:
    """Who made a request (IHE BALP, OAuth access token use): the client (``who.display`` its id, the network
    address it called from) and, when the token acts for a user (its SMART ``fhirUser`` claim,
    scopes-and-launch-context.html#fhiruser), the user as the requestor: ``who`` the ``Practitioner`` (or
    PractitionerRole, Patient, RelatedPerson) it names, typed as BALP's user agent (``AGNT`` for a change,
    ``IRCP`` for what is read). Every AuditEvent of a request builds its agents here."""
    user = _user_agent(fhir_user, action) if fhir_user else None
    agent: dict[str, Any] = {"who": {"display": client}, "requestor": user is None}
    if user is not None:
        agent["type"] = {"coding": [SOURCE_ROLE]}
    if address:
        agent["network"] = {"address": address, "type": "2"}
    return [user, agent] if user is not None else [agent]


def _user_agent(fhir_user: str, action: str) -> dict[str, Any]:
    kind = {"system": ROLE_CLASS, "code": "AGNT", "display": "agent"} if action in ("C", "U", "D") else \
        {"system": PARTICIPATION, "code": "IRCP", "display": "information recipient"}  # fmt: skip
    who = {"reference": fhir_user} if AGENT_REFERENCE.match(fhir_user) else {"display": f"fhirUser {fhir_user[:200]}"}
    return {"type": {"coding": [kind]}, "who": who, "requestor": True}


def interaction(method: str, path: list[str], params: list[tuple[str, str]]) -> str:
    """The restful-interaction code of a request."""
    if not path:
        return "transaction" if method == "POST" else "search-system"
    if path[0] == "metadata":
        return "capabilities"
    if any(p.startswith("$") for p in path):
        return "operation"
    if "_history" in path:
        return "vread" if len(path) == 4 else "history"
    if len(path) == 1 or path[-1] == "_search" or (len(path) == 3 and path[0] == "Patient"):
        return {"POST": "create" if path[-1] != "_search" else "search-type", "PUT": "update",
                "DELETE": "delete", "PATCH": "patch"}.get(method, "search-type")  # fmt: skip
    return {"GET": "read", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method, "read")


def _outcome(status: int) -> str:
    return "0" if status < 400 else ("4" if status < 500 else "8")


def rest_event(
    *,
    method: str,
    path: list[str],
    params: list[tuple[str, str]],
    status: int,
    who: str,
    address: str | None,
    entity: str | None,
    patient: str | None,
    query_key: bytes = b"",
    fhir_user: str | None = None,
) -> dict[str, Any]:
    """The AuditEvent of a REST interaction; a search's query is kept as ``pseudonymous_query``; ``who`` the
    client, ``fhir_user`` the user its token acts for (``requestor_agents``)."""
    code = interaction(method, path, params)
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": REST_TYPE,
        "subtype": [{"system": INTERACTION_SYSTEM, "code": code}],
        "action": ACTIONS.get(code, "E"),
        "recorded": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "outcome": _outcome(status),
        "agent": requestor_agents(who, fhir_user, address, ACTIONS.get(code, "E")),
        "source": {"observer": {"display": "DermBridge FHIR server"},
                   "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4"}]},
    }  # fmt: skip
    if status >= 400:
        event["outcomeDesc"] = f"HTTP {status}"
    entities: list[dict[str, Any]] = []
    if entity:
        entities.append({"what": {"reference": entity}, "type": {"system": ENTITY_TYPE, "code": "2"}})
    elif path and path[0] and not path[0].startswith(("$", "_", "metadata")):
        entities.append({"what": {"display": path[0]}, "type": {"system": ENTITY_TYPE, "code": "2"}})
    if code.startswith("search") and params and entities:
        entities[0]["query"] = base64.b64encode(pseudonymous_query(params, query_key)).decode()
    if patient:
        entities.append({"what": {"reference": patient}, "type": {"system": ENTITY_TYPE, "code": "1"},
                         "role": {"system": OBJECT_ROLE, "code": "1"}})  # fmt: skip
    if entities:
        event["entity"] = entities
    return event


def pseudonymous_query(params: list[tuple[str, str]], key: bytes) -> bytes:
    """A search's query without its values (AuditEvent.entity.query, IHE BALP "Query"): each
    parameter's name and modifier, and an HMAC-SHA256 of its value under the audit query key.

    Names and MRNs searched for stay out of the trail, which ``$erase`` never shortens: the same
    search can still be recognised (the same digest) by whoever holds the key."""
    parts = [f"{name}=hmac:{hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:32]}" for name, value in params]
    return "&".join(parts).encode()


def patient_of(path: list[str], params: list[tuple[str, str]], body: Any) -> str | None:
    """The patient an interaction concerns, when it can be told from the request or the answer."""
    if len(path) >= 2 and path[0] == "Patient" and not path[1].startswith(("$", "_")):
        return f"Patient/{path[1]}"
    for key, value in params:
        if key in ("patient", "subject") and value:
            return value if "/" in value else f"Patient/{value}"
    if isinstance(body, dict):
        for element in ("patient", "subject"):
            reference = (body.get(element) or {}).get("reference") if isinstance(body.get(element), dict) else None
            if isinstance(reference, str) and reference.startswith("Patient/"):
                return reference
    return None


DCM = "http://dicom.nema.org/resources/ontology/DCM"


def token_event(*, client_id: str, status: int, address: str | None, reason: str | None) -> dict[str, Any]:
    """A token request (DICOM "User Authentication" / "Login"): issued or refused, and why."""
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": {"system": DCM, "code": "110114", "display": "User Authentication"},
        "subtype": [{"system": DCM, "code": "110122", "display": "Login"}],
        "action": "E",
        "recorded": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "outcome": _outcome(status),
        "agent": [{"who": {"display": client_id or "(unidentified client)"}, "requestor": True}],
        "source": {"observer": {"display": "DermBridge token endpoint"},
                   "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4"}]},
    }  # fmt: skip
    if address:
        event["agent"][0]["network"] = {"address": address, "type": "2"}
    if status >= 400:
        event["outcomeDesc"] = f"HTTP {status}: {reason}" if reason else f"HTTP {status}"
    return event
