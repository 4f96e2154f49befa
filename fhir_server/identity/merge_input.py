"""The input of ``Patient/$merge`` (R5 patient-operation-merge.html, served on R4 as a custom
operation): which records are the source and the target, located by reference and/or identifiers,
and the checks the operation makes before it changes anything."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fhir_server.api.messages import FhirRequest
from fhir_server.api.parameters import named_values, one_of, values_of
from fhir_server.errors import OperationOutcomeError, bad_request, unprocessable
from fhir_server.operation_definitions import operation_definition, parameter
from fhir_server.repository import Repository, Stored
from fhir_server.search.escaping import token

MAX_IDENTIFIERS = 10


@dataclass(frozen=True, slots=True)
class MergeInput:
    source: Stored
    target: Stored
    result: dict[str, Any] | None  # result-patient: the target as the client wants it after the merge
    preview: bool


def linked(patient: dict[str, Any], link_type: str) -> list[str]:
    """The ids of the Patients this one links to with ``link_type`` (replaces, replaced-by...)."""
    ids = []
    for link in patient.get("link") or []:
        reference = ((link or {}).get("other") or {}).get("reference", "")
        if link.get("type") == link_type and reference.startswith("Patient/"):
            ids.append(reference.removeprefix("Patient/"))
    return ids


async def _by_identifiers(repo: Repository, identifiers: list[Any], role: str) -> set[str]:
    found: set[str] | None = None
    for identifier in identifiers:
        if not isinstance(identifier, dict) or not identifier.get("value"):
            raise bad_request(f"{role}-identifier must be an Identifier with a value", [f"{role}-identifier"])
        wanted = token(str(identifier.get("system", "")), str(identifier["value"]))
        ids = {str(s.resource["id"]) for s in await repo.find("Patient", [("identifier", wanted)], 3)}
        found = ids if found is None else found & ids
    return found or set()


async def _locate(repo: Repository, given: list[tuple[str, Any]], role: str) -> Stored:
    """The Patient named by ``{role}`` and/or ``{role}-identifier``: exactly one, which carries them all."""
    reference, identifiers = one_of(given, role), values_of(given, f"{role}-identifier")
    if reference is None and not identifiers:
        raise bad_request(f"$merge needs {role} or {role}-identifier", [role])
    if len(identifiers) > MAX_IDENTIFIERS:
        raise bad_request(f"at most {MAX_IDENTIFIERS} {role}-identifier parameters", [f"{role}-identifier"])
    candidates = await _by_identifiers(repo, identifiers, role) if identifiers else None
    if reference is not None:
        text = reference.get("reference") if isinstance(reference, dict) else None
        if not isinstance(text, str) or not text.startswith("Patient/"):
            raise bad_request(f"{role} must be a reference to a Patient (Patient/id)", [role])
        id = text.removeprefix("Patient/")
        if candidates is not None and id not in candidates:
            raise unprocessable(f"{text} does not carry every {role}-identifier given", [f"{role}-identifier"])
        candidates = {id}
    assert candidates is not None
    if len(candidates) != 1:
        what = "no Patient" if not candidates else f"{len(candidates)} Patients"
        raise unprocessable(f"the {role}-identifier parameters match {what}; they must name exactly one",
                            [f"{role}-identifier"])  # fmt: skip
    try:
        return await repo.read("Patient", candidates.pop())
    except OperationOutcomeError as error:
        if error.status == 404:
            raise unprocessable(f"the {role} is not known", [role]) from error
        raise


def _preview(value: Any) -> bool:
    if value in (None, False, "false"):
        return False
    if value in (True, "true"):
        return True
    raise bad_request("preview is a boolean", ["preview"])


async def merge_input(repo: Repository, request: FhirRequest) -> MergeInput:
    """The source, target, result and preview of a $merge request, checked."""
    given = named_values(request)
    source = await _locate(repo, given, "source-patient")
    target = await _locate(repo, given, "target-patient")
    source_id, target_id = str(source.resource["id"]), str(target.resource["id"])
    if source_id == target_id:
        raise unprocessable("the source and the target are the same Patient", ["source-patient"])
    for stored, role in ((source, "source-patient"), (target, "target-patient")):
        survivor = linked(stored.resource, "replaced-by")
        if survivor:
            raise unprocessable(f"Patient/{stored.resource['id']} was already merged into Patient/{survivor[0]}",
                                [role])  # fmt: skip
    result = one_of(given, "result-patient")
    if result is not None and (not isinstance(result, dict) or result.get("resourceType") != "Patient"):
        raise bad_request("result-patient must be a Patient resource", ["result-patient"])
    if result is not None and result.get("id") != target_id:
        raise unprocessable(f"result-patient must be the target, Patient/{target_id}", ["result-patient"])
    return MergeInput(source, target, result, _preview(one_of(given, "preview")))


PATIENT = ["http://hl7.org/fhir/StructureDefinition/Patient"]
MERGE_DEFINITION = operation_definition(
    "merge",
    level="type",
    resource=["Patient"],
    title="Patient Merge (R5 Patient-merge on R4)",
    description="Merges the source Patient into the target (R5 http://hl7.org/fhir/OperationDefinition/"
    "Patient-merge): every resource of the source's compartment is re-pointed to the target (its images and "
    "Consents with it, re-encrypted under the target's key), the source becomes inactive with a replaced-by link, "
    "the target gets a replaces link and the source's identifiers (use old). Audited. Erasing the target erases "
    "the records it replaces too.",
    parameters=[
        parameter("source-patient", "in", "Reference", targetProfile=PATIENT),
        parameter("source-patient-identifier", "in", "Identifier", max="*"),
        parameter("target-patient", "in", "Reference", targetProfile=PATIENT),
        parameter("target-patient-identifier", "in", "Identifier", max="*"),
        parameter("result-patient", "in", "Patient"),
        parameter("preview", "in", "boolean"),
        parameter("input", "out", "Parameters", min=1),
        parameter("outcome", "out", "OperationOutcome", min=1),
        parameter("result", "out", "Patient"),
    ],
)
