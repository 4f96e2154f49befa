"""``POST Consent/$decide``: the consent decision as a FHIR operation (Parameters in and out)."""

from __future__ import annotations

from typing import Any

from fhir_server.api.messages import FhirRequest, FhirResponse
from fhir_server.consent.decision import decide
from fhir_server.errors import bad_request
from fhir_server.operation_definitions import operation_definition, parameter
from fhir_server.repository import Repository


def operation_parameters(request: FhirRequest) -> dict[str, Any]:
    """An operation's input parameters by name: from a Parameters body, else from the query (operations.html)."""
    body = request.body
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        found: dict[str, Any] = {}
        for parameter in body.get("parameter") or []:
            if isinstance(parameter, dict) and isinstance(parameter.get("name"), str):
                value = next((v for k, v in parameter.items() if k.startswith("value")), None)
                found[parameter["name"]] = value
        return found
    return dict(request.params)


async def consent_decide(
    repo: Repository, request: FhirRequest, resource_type: str | None, id: str | None
) -> FhirResponse:
    given = operation_parameters(request)
    patient = given.get("patient")
    purpose = given.get("purpose")
    if isinstance(patient, dict):
        patient = patient.get("reference")
    if not isinstance(patient, str) or not patient:
        raise bad_request("$decide needs a patient (Patient/id or id)", ["patient"])
    if isinstance(purpose, str) and "|" in purpose:
        system, _, code = purpose.partition("|")
        purpose = {"system": system, "code": code}
    if not isinstance(purpose, dict) or not purpose.get("code"):
        raise bad_request("$decide needs a purpose (a Coding, or system|code)", ["purpose"])
    actor = given.get("actor")
    if isinstance(actor, dict):
        actor = actor.get("reference")
    patient_id = patient.split("/")[-1]
    await repo.read("Patient", patient_id)
    decision = await decide(repo, patient_id, (purpose.get("system") or "", purpose["code"]), actor)
    output: list[dict[str, Any]] = [
        {"name": "decision", "valueCode": "permit" if decision.permit else "deny"},
        {"name": "reason", "valueString": decision.reason},
    ]
    if decision.consent is not None:
        output.append(
            {"name": "consent", "valueReference": {"reference": f"Consent/{decision.consent.resource['id']}"}}
        )
    return FhirResponse(200, {"resourceType": "Parameters", "parameter": output})


DECIDE_DEFINITION = operation_definition(
    "decide",
    level="type",
    resource=["Consent"],
    affects_state=False,
    description="The consent decision for a patient, a purpose of use and an optional actor: permit or deny, "
    "why, and the Consent that decided.",
    parameters=[
        parameter("patient", "in", "Reference", min=1),
        parameter("purpose", "in", "Coding", min=1),
        parameter("actor", "in", "Reference"),
        parameter("decision", "out", "code", min=1),
        parameter("reason", "out", "string", min=1),
        parameter("consent", "out", "Reference"),
    ],
)
