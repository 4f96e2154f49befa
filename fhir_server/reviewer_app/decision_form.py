"""The case view's decision form as the review operations' Parameters (``fhir_server.workflow.review``):
confirm and override are ``Task/$complete``, decline is ``Task/$decline`` (the case goes back to the queue).

The operation has no coded management element, so the management the reviewer picks (discharge, follow-up,
biopsy, urgent referral) is written in words in the finding's note and the report's conclusion."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fhir_server.workflow.review.codes import DECLINE_REASONS, URGENCIES

SNOMED = "http://snomed.info/sct"
MANAGEMENT = {
    "discharge": "Discharge",
    "follow-up": "Follow-up",
    "biopsy": "Biopsy",
    "urgent-referral": "Urgent referral",
}
MAX_NOTE = 1000
CONFIRMED = "Confirmed on clinician review."


class FormError(ValueError):
    """A form that cannot become the operation's parameters (the page says why)."""


@dataclass(frozen=True, slots=True)
class Operation:
    name: str  # complete | decline
    parameters: dict[str, Any]


def _parameters(*items: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": list(items)}


def operation(form: dict[str, str], diagnoses: dict[str, str]) -> Operation:
    """The operation the form asks for; ``diagnoses`` the value set's codes and displays."""
    kind = form.get("decision", "")
    note = form.get("note", "")[:MAX_NOTE]
    if kind == "confirm":  # a note typed with Confirm is kept in the report's conclusion (the AI's codes stay)
        said = (
            [{"name": "conclusion", "valueString": f"{CONFIRMED} Reviewer's note: {note.strip()}"}]
            if note.strip()
            else []
        )
        return Operation("complete", _parameters({"name": "decision", "valueCode": "confirm"}, *said))
    if kind == "decline":
        reason = form.get("reason", "")
        if reason not in DECLINE_REASONS:
            raise FormError("choose a reason to decline")
        said = [{"name": "note", "valueString": note}] if note else []
        return Operation("decline", _parameters({"name": "reason", "valueCode": reason}, *said))
    if kind == "override":
        return Operation("complete", _override(form, diagnoses, note))
    raise FormError("choose confirm, override or decline")


def _override(form: dict[str, str], diagnoses: dict[str, str], note: str) -> dict[str, Any]:
    lesion, code = form.get("lesion", ""), form.get("diagnosis", "")
    urgency, management = form.get("urgency", ""), form.get("management", "")
    if not lesion.startswith("BodyStructure/"):
        raise FormError("choose the lesion the diagnosis is about")
    if code not in diagnoses:
        raise FormError("choose a diagnosis from the list")
    if urgency not in URGENCIES:
        raise FormError("choose an urgency")
    if management not in MANAGEMENT:
        raise FormError("choose the management")
    plan = f"Management: {MANAGEMENT[management]}."
    words = f"{plan} {note}".strip()
    concept = {"coding": [{"system": SNOMED, "code": code, "display": diagnoses[code]}], "text": diagnoses[code]}
    finding = {
        "name": "finding",
        "part": [
            {"name": "lesion", "valueReference": {"reference": lesion}},
            {"name": "diagnosis", "valueCodeableConcept": concept},
            {"name": "urgency", "valueCode": urgency},
            {"name": "note", "valueString": words},
        ],
    }
    conclusion = f"{diagnoses[code]} ({urgency}). {words}"
    return _parameters(
        {"name": "decision", "valueCode": "override"}, finding, {"name": "conclusion", "valueString": conclusion}
    )
