"""``Patient/$merge`` (R5 patient-operation-merge.html, a custom operation on R4): the source
Patient's record joins the target's, in one transaction.

- Every resource of the source's compartment (except AuditEvents, which are append-only) gets a
  new version whose references to the source point at the target. A new version is sealed under
  the data key of the compartment it now belongs to, so the re-pointed resources are encrypted
  under the target's key from then on; their older versions stay under the source's key.
- The merge hooks of other packages run first (the DICOM node re-seals its objects' keys under the
  target's data key and points its study records at the target).
- The source becomes ``active: false`` with a ``replaced-by`` link; the target gets a ``replaces``
  link (written in a named system context: no other write may set, change or drop these links,
  ``Repository``) and, unless ``result-patient`` says otherwise, the source's identifiers with ``use: old``.
- An AuditEvent ("Patient Record", update) naming both patients commits with the merge.

``$erase`` of the target follows its ``replaces`` links, so the source's key and its older
versions go with it. ``preview`` answers what would change, changing nothing.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from fhir_server.api.compartment import compartment_clause
from fhir_server.api.messages import FhirRequest, FhirResponse
from fhir_server.audit.events import DCM, ENTITY_TYPE, OBJECT_ROLE
from fhir_server.audit.trail import AuditTrail
from fhir_server.definitions import patient_compartment, resource_types
from fhir_server.errors import outcome, unprocessable
from fhir_server.identity.merge_input import MergeInput, merge_input
from fhir_server.repository import Repository, Stored

MergeHook = Callable[[Repository, str, str], Awaitable[None]]  # (repository in the transaction, source, target)
KEPT = frozenset({"AuditEvent", "Patient"})
BATCH = 500
MAX_MEMBERS = 20_000


def repointed(value: Any, source_id: str, target_id: str) -> Any:
    """``value`` with every ``reference`` to Patient/source (relative, absolute or versioned) on the target."""
    pattern = re.compile(rf"(^|/)Patient/{re.escape(source_id)}(/_history/[^/]+)?$")
    if isinstance(value, list):
        return [repointed(v, source_id, target_id) for v in value]
    if not isinstance(value, dict):
        return value
    moved = {}
    for key, item in value.items():
        if key == "reference" and isinstance(item, str) and pattern.search(item):
            moved[key] = pattern.sub(rf"\1Patient/{target_id}", item)
        else:
            moved[key] = repointed(item, source_id, target_id)
    return moved


async def compartment_members(repo: Repository, patient_id: str) -> list[Stored]:
    """The current resources of the patient's compartment (compartmentdefinition-patient), bar AuditEvents."""
    found: list[Stored] = []
    for resource_type in sorted((set(patient_compartment()) & resource_types()) - KEPT):
        clause = compartment_clause(resource_type, patient_id)
        offset = 0
        while clause is not None:
            search = repo.parse((resource_type,), [("_count", str(BATCH))])
            search.query = replace(search.query, where=(clause, *search.query.where), total="none", offset=offset)
            page = await repo.read_page(await repo.search(search))
            found += page
            if len(found) > MAX_MEMBERS:
                raise unprocessable(f"the source has more than {MAX_MEMBERS} resources: too many for one merge")
            if len(page) < BATCH:
                break
            offset += BATCH
    return found


def _with_link(patient: dict[str, Any], other: str, link_type: str) -> dict[str, Any]:
    link = {"other": {"reference": f"Patient/{other}"}, "type": link_type}
    links = [k for k in patient.get("link") or [] if k != link]
    return {**patient, "link": [*links, link]}


def merged_target(merge: MergeInput) -> dict[str, Any]:
    """The target as it will be: result-patient if given, else with the source's identifiers as old ones."""
    source_id = str(merge.source.resource["id"])
    if merge.result is not None:
        body = {k: v for k, v in merge.result.items() if k != "meta"}
    else:
        body = {k: v for k, v in merge.target.resource.items() if k != "meta"}
        known = {(i.get("system"), i.get("value")) for i in body.get("identifier") or []}
        old = [{**i, "use": "old"} for i in merge.source.resource.get("identifier") or []
               if (i.get("system"), i.get("value")) not in known]  # fmt: skip
        if old:
            body["identifier"] = [*(body.get("identifier") or []), *old]
    return _with_link(body, source_id, "replaces")


def retired_source(merge: MergeInput) -> dict[str, Any]:
    body = {k: v for k, v in merge.source.resource.items() if k != "meta"}
    return _with_link({**body, "active": False}, str(merge.target.resource["id"]), "replaced-by")


def merge_audit(source_id: str, target_id: str, moved: int) -> dict[str, Any]:
    """DICOM "Patient Record" (110110), action update: both patients named, by reference only."""
    return {
        "resourceType": "AuditEvent",
        "type": {"system": DCM, "code": "110110", "display": "Patient Record"},
        "subtype": [{"system": "urn:dermbridge:audit", "code": "patient-merge", "display": "Patient merge"}],
        "action": "U",
        "recorded": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "outcome": "0",
        "outcomeDesc": f"Patient/{source_id} merged into Patient/{target_id}: {moved} resources re-pointed",
        "agent": [{"who": {"display": "DermBridge FHIR server"}, "requestor": False}],
        "source": {"observer": {"display": "DermBridge FHIR server"},
                   "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4"}]},
        "entity": [{"what": {"reference": f"Patient/{pid}"}, "type": {"system": ENTITY_TYPE, "code": "1"},
                    "role": {"system": OBJECT_ROLE, "code": "1"}, "description": role}
                   for pid, role in ((source_id, "merge source"), (target_id, "merge target"))],
    }  # fmt: skip


class PatientMerge:
    """The ``$merge`` handler, with the hooks other packages register and the audit trail."""

    def __init__(self, trail: AuditTrail | None = None) -> None:
        self.hooks: list[MergeHook] = []
        self.trail = trail

    async def __call__(
        self, repo: Repository, request: FhirRequest, resource_type: str | None, id: str | None
    ) -> FhirResponse:
        async with repo.store.transaction() as tx:  # read and written in one transaction: no change slips between
            bound = repo.within(tx)
            merge = await merge_input(bound, request)
            source_id, target_id = str(merge.source.resource["id"]), str(merge.target.resource["id"])
            members = await compartment_members(bound, source_id)
            if merge.preview:
                message = f"preview: merging Patient/{source_id} into Patient/{target_id} would re-point"
                return self._answer(request, f"{message} {len(members)} resources", merged_target(merge))
            for hook in self.hooks:
                await hook(bound, source_id, target_id)
            system = Repository.system(repo.store, reason=f"$merge of Patient/{source_id} into Patient/{target_id}",
                                       local_base=repo.local_base, tx=tx)  # fmt: skip
            for stored in members:  # the caller's right to update each; what the server manages in them (a
                moved = repointed(stored.resource, source_id, target_id)  # review Task's subject) moves too
                bound.policy.check_write(str(moved["resourceType"]), moved, "u")
                await system.update(moved, resource_type=str(moved["resourceType"]), id=str(moved["id"]),
                                    server_built=True)  # fmt: skip
            retired, merged = retired_source(merge), merged_target(merge)
            for patient in (retired, merged):  # the caller's right to update both; the links are the server's
                bound.policy.check_write("Patient", patient, "u")
            await system.update(retired, resource_type="Patient", id=source_id, server_built=True)
            target = await system.update(merged, resource_type="Patient", id=target_id)
            if self.trail is not None:
                await self.trail.record_in(repo.store, tx, merge_audit(source_id, target_id, len(members)))
        message = f"Patient/{source_id} merged into Patient/{target_id}: {len(members)} resources re-pointed"
        return self._answer(request, message, target.resource)

    @staticmethod
    def _answer(request: FhirRequest, message: str, result: dict[str, Any]) -> FhirResponse:
        parameters: list[dict[str, Any]] = []
        if isinstance(request.body, dict):
            parameters.append({"name": "input", "resource": request.body})
        parameters.append({"name": "outcome", "resource": outcome("information", "informational", message)})
        parameters.append({"name": "result", "resource": result})
        return FhirResponse(200, {"resourceType": "Parameters", "parameter": parameters})
