"""The lapsed-claim sweep (issue 14, "A claim has a lease: an abandoned claim returns to the queue"): a claim
whose lease ran out goes back to the queue even when nobody lists the worklist or claims the Task.

Run by the server every ``interval`` seconds (``DERMBRIDGE_REVIEW_SWEEP_SECONDS``) over every tenant, and
safe on several processes at once: each return is an update conditional on the version read
(http.html#concurrency), so of two processes returning the same claim one writes and the other's 412 is
skipped; a reviewer renewing or completing meanwhile wins the same way. Bounded: at most ``limit`` claimed
Tasks are looked at per tenant and run, the least recently changed first. Each return commits with its
``AuditEvent`` (subtype ``urn:dermbridge:audit-subtype|review-claim-lapsed``: the Task, its patient, the
reviewer whose claim lapsed)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from fhir_server.audit.events import ENTITY_TYPE, OBJECT_ROLE, REST_TYPE
from fhir_server.audit.trail import AuditTrail
from fhir_server.errors import OperationOutcomeError
from fhir_server.periodic import Periodic
from fhir_server.repository import Repository, Stored
from fhir_server.storage.port import Engine, TenantStore
from fhir_server.workflow.review import transitions

log = logging.getLogger(__name__)
WHO = "DermBridge review sweep"
SUBTYPE = {"system": "urn:dermbridge:audit-subtype", "code": "review-claim-lapsed",
           "display": "Lapsed review claim returned to the queue"}  # fmt: skip
REVIEW_CODE = "urn:dermbridge:task|clinician-review"
DEFAULT_LIMIT = 1000
LOST_RACE = (409, 412)  # another process (or the reviewer) changed the Task since it was read


def lapsed_event(task: dict[str, Any], former_owner: str | None) -> dict[str, Any]:
    """The AuditEvent of one claim returned to the queue (auditevent.html): references only."""
    entities: list[dict[str, Any]] = [
        {"what": {"reference": f"Task/{task['id']}"}, "type": {"system": ENTITY_TYPE, "code": "2"},
         "detail": [{"type": "former-owner", "valueString": former_owner or "(none)"}]},
    ]  # fmt: skip
    patient = (task.get("for") or {}).get("reference")
    if isinstance(patient, str) and patient.startswith("Patient/"):
        entities.append({"what": {"reference": patient}, "type": {"system": ENTITY_TYPE, "code": "1"},
                         "role": {"system": OBJECT_ROLE, "code": "1"}})  # fmt: skip
    return {
        "resourceType": "AuditEvent",
        "type": REST_TYPE,
        "subtype": [SUBTYPE],
        "action": "U",
        "recorded": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "outcome": "0",
        "agent": [{"who": {"display": WHO}, "requestor": False}],
        "source": {"observer": {"display": WHO},
                   "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4"}]},
        "entity": entities,
    }  # fmt: skip


async def return_lapsed_claims(
    store: TenantStore, now: datetime, audit: AuditTrail | None = None, limit: int = DEFAULT_LIMIT
) -> list[str]:
    """Every lapsed claim of the tenant (among ``limit`` claimed Tasks) back in the queue; the Task ids this
    call returned (a lost race is not counted)."""
    system = Repository.system(store, reason="return lapsed review claims")
    criteria = [("status", "in-progress"), ("code", REVIEW_CODE), ("_sort", "_lastUpdated")]
    returned = []
    for stored in await system.find("Task", criteria, limit):
        if await _return(store, system, stored, now, audit):
            returned.append(str(stored.resource["id"]))
    return returned


async def _return(store: TenantStore, system: Repository, stored: Stored, now: datetime,
                  audit: AuditTrail | None) -> bool:  # fmt: skip
    queued = transitions.lapse(stored.resource, now)
    if queued is None:
        return False
    try:
        async with store.transaction() as tx:
            await system.within(tx).update(queued, resource_type="Task", id=str(queued["id"]), if_match=stored.etag,
                                           server_built=True)  # fmt: skip
            if audit is not None:
                await audit.record_in(store, tx, lapsed_event(queued, transitions.owner(stored.resource)))
    except OperationOutcomeError as error:
        if error.status not in LOST_RACE:
            raise
        return False
    return True


class LapsedClaimSweep(Periodic):
    """``return_lapsed_claims`` for every tenant every ``interval`` seconds; a failed round is logged and
    retried at the next one, it never stops the server."""

    name = "review-claim-sweep"

    def __init__(self, engine: Engine, audit: AuditTrail | None, interval: float, limit: int = DEFAULT_LIMIT) -> None:
        super().__init__(interval)
        self.engine, self.audit, self.limit = engine, audit, limit

    async def run(self) -> dict[str, int]:
        """One round over every tenant: how many claims each had returned."""
        counts: dict[str, int] = {}
        for tenant in await self.engine.tenant_names():
            try:
                store = await self.engine.tenant(tenant)
                returned = await return_lapsed_claims(store, datetime.now(UTC), self.audit, self.limit)
            except Exception:
                log.exception("the lapsed-claim sweep of tenant %s failed; the next round retries", tenant)
                continue
            counts[tenant] = len(returned)
            if returned:
                log.info("tenant %s: %d lapsed review claim(s) returned to the queue", tenant, len(returned))
        return counts
