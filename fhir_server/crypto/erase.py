"""``Patient/[id]/$erase``: GDPR Article 17 erasure by crypto-shredding.

Only a user/ or system/ scope may erase (``Repository.authorize_operation``): a patient's own erasure
request goes through the organisation. In one transaction: every resource the patient owns (its
subject/patient reference, ``fhir_server.search.membership.owners``; not what merely names it as a
performer) and the Patient itself get a content-free tombstone
(so reads answer 410 and its search-index rows are deleted), and so do the resources produced for
it that no compartment holds: the ``Binary``s and ``OperationOutcome``s its resources point at (a
saliency map's PNG, a failed analysis's outcome) and the ``Provenance``s whose target is one of
them; the erasure hooks run (the DICOM node deletes its attribute index and objects), and the
patient's data key is destroyed, with a marker that keeps it from coming back. Then the store is
scrubbed: deleted rows are overwritten and the WAL truncated. Every older version stays in the
history as ciphertext under a key that no longer exists. AuditEvents are kept (append-only, tenant
key, references only). Idempotent. An active legal hold on the patient (or a record merged into it)
or one of its cases refuses it (409, ``fhir_server.retention.holds``).

A Patient that others were merged into (``Patient/$merge``: ``link`` ``replaces``) is erased with
them: the versions of its resources from before the merge are sealed under their keys. A merged
record itself is not erased alone: the person's record is its survivor's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from typing import Any

from fhir_server.api.messages import FhirRequest, FhirResponse
from fhir_server.audit.audited_writes import AuditedWrites
from fhir_server.definitions import patient_compartment, resource_types
from fhir_server.errors import OperationOutcomeError, conflict, not_found, outcome
from fhir_server.identity.merge_input import linked
from fhir_server.operation_definitions import operation_definition, returns
from fhir_server.repository import Repository
from fhir_server.retention.holds import held, hold_on
from fhir_server.search.extract import parse_local_reference
from fhir_server.search.membership import owner_clause
from fhir_server.storage.query import ParamClause, ReferenceMatch

ErasureHook = Callable[[Repository, str], Awaitable[None]]  # (repository in the transaction, patient id)
BATCH = 500
MAX_MERGED = 100  # records merged into one survivor, erased with it
KEPT = frozenset({"AuditEvent"})  # the audit trail is append-only and names patients by reference only
DEPENDENT = frozenset({"Binary", "OperationOutcome"})  # in no compartment: erased with what points at them


@dataclass(slots=True)
class _Erased:
    resources: list[tuple[str, str]] = field(default_factory=list)  # (type, id) tombstoned
    dependents: set[tuple[str, str]] = field(default_factory=set)  # Binary / OperationOutcome they point at


class Erasure:
    """The ``$erase`` operation handler, with the hooks other packages register."""

    def __init__(self) -> None:
        self.hooks: list[ErasureHook] = []

    async def __call__(
        self, repo: Repository, request: FhirRequest, resource_type: str | None, id: str | None
    ) -> FhirResponse:
        assert id is not None
        store = AuditedWrites.unwrap(repo.store)
        encryption = store.encryption
        if encryption is None:
            raise OperationOutcomeError.of(
                400, "not-supported", "$erase needs encryption at rest (DERMBRIDGE_ENCRYPTION_ENABLED)"
            )
        ref = f"Patient/{id}"
        if ref in encryption.erased:
            return FhirResponse(200, outcome("information", "informational", f"{ref} was already erased"))
        if await store.read("Patient", id) is None:
            raise not_found(f"{ref} is not known")
        # the caller was authorized for $erase of this Patient: finding and erasing its records is the system's
        system = Repository.system(store, reason=f"$erase of {ref}", local_base=repo.local_base)
        patients = await _merged_records(system, id, encryption.erased)
        for patient_id in patients:  # before the hooks, which delete DICOM objects outside the transaction
            hold = await hold_on(store, {"resourceType": "Patient", "id": patient_id})
            if hold is not None:
                raise held(f"Patient/{patient_id}", hold, detailed=repo.policy.may(hold))
        members = [*sorted((set(patient_compartment()) & resource_types()) - KEPT - {"Patient"}), "Patient"]
        erased = _Erased()
        async with repo.store.transaction() as tx:  # with the request's AuditEvent (``AuditedWrites``)
            bound = system.within(tx)
            for patient_id in patients:
                for hook in self.hooks:
                    await hook(bound, patient_id)
                for member in members:
                    await _tombstone_members(bound, member, patient_id, erased)
            await _tombstone_dependents(bound, erased)  # before the keys they are sealed under go
            for patient_id in patients:
                await encryption.erase(tx, f"Patient/{patient_id}")
        await store.scrub()
        merged = f" with the {len(patients) - 1} record(s) merged into it" if len(patients) > 1 else ""
        message = f"{ref} erased{merged}: {len(erased.resources)} resources tombstoned, data keys destroyed"
        return FhirResponse(200, outcome("information", "informational", message))


async def _merged_records(repo: Repository, id: str, erased: AbstractSet[str]) -> list[str]:
    """The patient and, transitively, every record merged into it ($merge); 409 for a merged record."""
    current = await repo.current("Patient", id)
    survivors = linked(current or {}, "replaced-by")
    if survivors:
        raise conflict(f"Patient/{id} was merged into Patient/{survivors[0]}: erase that Patient (with it, this one)")
    found, queue = [id], [id]
    while queue and len(found) <= MAX_MERGED:
        patient = await repo.current("Patient", queue.pop())
        for other in linked(patient or {}, "replaces"):
            if other not in found and f"Patient/{other}" not in erased:
                found.append(other)
                queue.append(other)
    return found


async def _tombstone_members(repo: Repository, resource_type: str, patient_id: str, erased: _Erased) -> None:
    """The patient's own resources of ``resource_type`` (``owner_clause``: the subject/patient reference,
    as a patient/ scope reads them), not those that merely name it (a performer, an author)."""
    clause = owner_clause(resource_type, patient_id)
    if clause is None:
        return
    while True:
        search = repo.parse((resource_type,), [("_count", str(BATCH))])
        search.query = replace(search.query, where=(clause, *search.query.where), total="none")
        found = await repo.read_page(await repo.search(search))
        for stored in found:
            await repo.delete(resource_type, str(stored.resource["id"]))
            erased.resources.append((resource_type, str(stored.resource["id"])))
            erased.dependents.update(_dependents(stored.resource))
        if len(found) < BATCH:
            return


def _references(value: object) -> Iterator[str]:
    """Every ``reference`` and attachment ``url`` in a resource."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("reference", "url") and isinstance(item, str):
                yield item
            else:
                yield from _references(item)
    elif isinstance(value, list):
        for item in value:
            yield from _references(item)


def _dependents(resource: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for reference in _references(resource):
        target = parse_local_reference(reference)
        if target is not None and target[0] in DEPENDENT:
            yield target


async def _tombstone_dependents(repo: Repository, erased: _Erased) -> None:
    """The Binarys and OperationOutcomes the erased resources point at, and the Provenances of them."""
    for resource_type, id in sorted(erased.dependents):
        if await repo.current(resource_type, id) is not None:
            await repo.delete(resource_type, id)
            erased.resources.append((resource_type, id))
    targets = [ReferenceMatch(t, i) for t, i in erased.resources]
    for start in range(0, len(targets), BATCH):
        clause = ParamClause("target", "reference", tuple(targets[start : start + BATCH]))
        while True:
            search = repo.parse(("Provenance",), [("_count", str(BATCH))])
            search.query = replace(search.query, where=(clause, *search.query.where), total="none")
            found = await repo.read_page(await repo.search(search))
            for stored in found:
                await repo.delete("Provenance", str(stored.resource["id"]))
            if len(found) < BATCH:
                break


ERASE_DEFINITION = operation_definition(
    "erase",
    level="instance",
    resource=["Patient"],
    description="GDPR Article 17 erasure: destroys the patient's data key, tombstones its compartment "
    "and deletes its search-index entries and DICOM objects. Idempotent.",
    parameters=[returns("OperationOutcome")],
)
