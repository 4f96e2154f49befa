"""``$legal-hold`` and ``$release-legal-hold`` on a Patient or a case (DiagnosticReport) (operations.html).

Placing a hold creates an active legal-hold ``Flag`` (``fhir_server.retention.holds``); releasing one
makes it inactive with ``period.end``, who released it and why. Both need a user/ or system/ scope
that may update the target's type (a patient cannot hold or release its own record), and each writes
its AuditEvent (who, why) in the transaction of the Flag.
"""

from __future__ import annotations

from typing import Any

from fhir_server.api.messages import FhirRequest, FhirResponse
from fhir_server.audit.trail import AuditTrail
from fhir_server.consent.operation import operation_parameters
from fhir_server.errors import bad_request, forbidden, not_found, unprocessable
from fhir_server.operation_definitions import operation_definition, parameter, returns
from fhir_server.repository import Repository, new_instant
from fhir_server.retention import holds
from fhir_server.retention.audit import hold_event

MAX_REASON = 1000
TARGETS = ("Patient", "DiagnosticReport")


class LegalHolds:
    """The two operation handlers, with the audit trail their events go to."""

    def __init__(self, audit: AuditTrail | None) -> None:
        self.audit = audit

    async def place(
        self, repo: Repository, request: FhirRequest, resource_type: str | None, id: str | None
    ) -> FhirResponse:
        target, patient, reason, who = await _invocation(repo, request, resource_type, id, "legal-hold")
        flag: dict[str, Any] = {
            "resourceType": "Flag",
            "status": "active",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/flag-category",
                                      "code": "admin", "display": "Administrative"}]}],
            "code": {"coding": [{"system": holds.FLAG_SYSTEM, "code": holds.LEGAL_HOLD, "display": "Legal hold"}],
                     "text": "Legal hold: do not delete or erase"},
            "meta": {"tag": [{"system": holds.FLAG_SYSTEM, "code": holds.LEGAL_HOLD}]},
            "subject": {"reference": patient},
            "period": {"start": new_instant()},
            "author": {"display": who},
            "extension": [{"url": holds.REASON_EXTENSION, "valueString": reason}],
        }  # fmt: skip
        if resource_type == "DiagnosticReport":
            flag["extension"].append({"url": holds.CASE_EXTENSION, "valueReference": {"reference": target}})
        async with repo.store.transaction() as tx:
            system = Repository.system(repo.store, reason=f"$legal-hold on {target}", local_base=repo.local_base, tx=tx)
            stored = await system.create(flag, resource_type="Flag")
            await self._record(repo, tx, hold_event("legal-hold", stored.resource, who, reason, _user(request)))
        return FhirResponse(201, stored.resource, {"Location": f"{request.base_url}/Flag/{stored.resource['id']}"})

    async def release(
        self, repo: Repository, request: FhirRequest, resource_type: str | None, id: str | None
    ) -> FhirResponse:
        target, patient, reason, who = await _invocation(repo, request, resource_type, id, "release-legal-hold")
        wanted = operation_parameters(request).get("hold")
        if isinstance(wanted, dict):
            wanted = wanted.get("reference")
        released: list[dict[str, Any]] = []
        async with repo.store.transaction() as tx:
            system = Repository.system(
                repo.store, reason=f"$release-legal-hold on {target}", local_base=repo.local_base, tx=tx
            )
            for flag in await holds.active_holds(tx, {patient.split("/", 1)[1]}):
                if _covers(flag, resource_type, target) and wanted in (None, flag["id"], f"Flag/{flag['id']}"):
                    released.append(await _release(system, flag, who, reason))
                    await self._record(repo, tx, hold_event("release-legal-hold", released[-1], who, reason,
                                                                   _user(request)))  # fmt: skip
            if not released:
                raise not_found(f"{target} has no active legal hold" + (f" {wanted}" if wanted else ""))
        output = [{"name": "released", "valueReference": {"reference": f"Flag/{f['id']}"}} for f in released]
        return FhirResponse(200, {"resourceType": "Parameters", "parameter": output})

    async def _record(self, repo: Repository, tx: Any, event: dict[str, Any]) -> None:
        if self.audit is not None:
            await self.audit.record_in(repo.store, tx, event)


def _covers(flag: dict[str, Any], resource_type: str | None, target: str) -> bool:
    """A release on the Patient releases the holds on the whole patient; on a case, that case's."""
    case = holds.held_case(flag)
    return case == target if resource_type == "DiagnosticReport" else case is None


async def _release(system: Repository, flag: dict[str, Any], who: str, reason: str) -> dict[str, Any]:
    flag = dict(flag)
    flag["status"] = "inactive"
    flag["period"] = {**(flag.get("period") or {}), "end": new_instant()}
    flag["extension"] = [
        *(flag.get("extension") or []),
        {"url": holds.RELEASED_BY_EXTENSION, "valueString": who},
        {"url": holds.RELEASE_REASON_EXTENSION, "valueString": reason},
    ]
    stored = await system.update(flag, resource_type="Flag", id=str(flag["id"]))
    return stored.resource


async def _invocation(
    repo: Repository, request: FhirRequest, resource_type: str | None, id: str | None, name: str
) -> tuple[str, str, str, str]:
    """The target's reference, its patient's, the reason given and who asks; a patient/ scope gets 403."""
    target, patient = await _target(repo, resource_type, id, name)
    return target, patient, _reason(request), _who(request)


async def _target(repo: Repository, resource_type: str | None, id: str | None, name: str) -> tuple[str, str]:
    assert resource_type in TARGETS and id is not None
    if repo.policy.decide(resource_type, "u") != "all":
        raise forbidden(f"${name} needs a user/ or system/ scope with write access to {resource_type}")
    stored = await repo.read(resource_type, id)
    target = f"{resource_type}/{id}"
    if resource_type == "Patient":
        return target, target
    subject = (stored.resource.get("subject") or {}).get("reference")
    if not isinstance(subject, str) or not subject.startswith("Patient/"):
        raise unprocessable(f"{target} has no Patient subject: a case hold is recorded on the case's patient")
    return target, subject


def _reason(request: FhirRequest) -> str:
    reason = operation_parameters(request).get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise bad_request("a legal hold and its release need a reason (a string parameter)", ["Parameters.parameter"])
    if len(reason) > MAX_REASON:
        raise bad_request(f"the reason is longer than {MAX_REASON} characters", ["Parameters.parameter"])
    return reason.strip()


def _user(request: FhirRequest) -> str | None:
    return request.access.fhir_user if request.access is not None else None


def _who(request: FhirRequest) -> str:
    return request.access.subject if request.access is not None else "(authentication disabled)"


def _definition(code: str, description: str, parameters: list[dict[str, Any]]) -> dict[str, Any]:
    return operation_definition(
        code,
        level="instance",
        resource=TARGETS,
        description=description,
        parameters=[parameter("reason", "in", "string", min=1), *parameters],
    )


LEGAL_HOLD_DEFINITION = _definition(
    "legal-hold",
    "Places a legal hold on a patient or a case: while it is active, $erase and the deletion of what it "
    "covers answer 409. Returns the hold, a Flag coded urn:dermbridge:record-flag|legal-hold.",
    [returns("Flag")],
)
RELEASE_DEFINITION = _definition(
    "release-legal-hold",
    "Releases the active legal holds on a patient (or a case), or the one named by hold; records who, why "
    "and the end of the hold's period.",
    [
        parameter("hold", "in", "Reference"),
        parameter("released", "out", "Reference", min=1, max="*"),
    ],
)
