"""The retention job: delete what a tenant's policies say has expired, never what a legal hold keeps.

Safe on several processes at once: a run first claims the tenant's retention lease, a record written
in a ``BEGIN IMMEDIATE`` transaction (the same serialised write every engine gives a transaction that
reads), so a second run finds it held and does nothing; the lease is renewed every batch, and a
crashed run's lease expires. Each deletion
is the repository's delete with ``If-Match`` on the version found expired, so a resource updated
meanwhile is left alone, and it commits with its own AuditEvent; the run ends with one AuditEvent
carrying its counts. A dry run claims nothing and changes nothing: it lists what a run would do.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import orjson

from fhir_server.audit.trail import AuditTrail
from fhir_server.errors import OperationOutcomeError
from fhir_server.repository import Repository, Stored
from fhir_server.retention.audit import deletion_event, run_event
from fhir_server.retention.holds import describe, hold_on
from fhir_server.retention.policies import RetentionPolicy, list_policies
from fhir_server.search.membership import owners
from fhir_server.storage.port import Record, ResourceStore, TenantStore

log = logging.getLogger(__name__)
LEASE_COLLECTION = "retention-run"
LEASE_KEY = "lease"
BATCH = 200
WHO = "DermBridge retention job"


@dataclass(slots=True)
class RunReport:
    """What a run did (or, dry, would do): one line per resource, and the counts."""

    dry_run: bool
    claimed: bool = True
    deleted: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)  # updated or deleted meanwhile: left alone

    @property
    def counts(self) -> dict[str, int]:
        return {"deleted": len(self.deleted), "held": len(self.held), "changed": len(self.changed)}


class RetentionJob:
    def __init__(self, audit: AuditTrail | None, lease_seconds: float = 3600.0, limit: int = 100_000) -> None:
        self.audit = audit
        self.lease_seconds = lease_seconds
        self.limit = limit  # resources looked at per run: a first run on a large store finishes in several

    async def run(self, store: TenantStore, *, dry_run: bool = False, now: datetime | None = None) -> RunReport:
        now = now or datetime.now(UTC)
        report = RunReport(dry_run)
        owner = None if dry_run else str(uuid.uuid4())
        if owner is not None and not await self._claim(store, owner):
            report.claimed = False
            return report
        try:
            for policy in await list_policies(store):
                if not await self._apply(store, policy, now, report, owner):
                    break
            if not dry_run and self.audit is not None:
                await self.audit.record(store, run_event(WHO, report.counts))
        finally:
            if owner is not None:
                await self._release(store, owner)
        return report

    async def _apply(
        self, store: TenantStore, policy: RetentionPolicy, now: datetime, report: RunReport, owner: str | None
    ) -> bool:
        """Apply one policy; False when the lease was lost (the run stops: another run has taken over)."""
        cutoff = (now - timedelta(days=policy.days)).isoformat(timespec="milliseconds")
        repo = Repository.system(store, reason=f"retention of {policy.resource_type}")
        offset = 0  # what stays (held, changed, or listed by a dry run) is paged over, the deleted drop out
        seen = 0
        while seen < self.limit:
            params = [("_lastUpdated", f"lt{cutoff}"), ("_sort", "_lastUpdated"), ("_count", str(BATCH))]
            request = repo.parse((policy.resource_type,), params)
            request.query = replace(request.query, offset=offset)
            found = await repo.read_page(await repo.search(request))
            seen += len(found)
            for stored in found:
                offset += await self._expire(store, stored, report)
            if len(found) < BATCH:
                return True
            if owner is not None and not await self._claim(store, owner):  # renewed each batch
                log.warning("tenant %s: the retention lease was taken over; this run stops", store.name)
                return False
        return True

    async def _expire(self, store: TenantStore, stored: Stored, report: RunReport) -> int:
        """Delete one expired resource (or list it); 1 when it stays where the search finds it, else 0."""
        reference = f"{stored.resource['resourceType']}/{stored.resource['id']}"
        hold = await hold_on(store, stored.resource)
        if hold is not None:
            report.held.append(f"{reference} ({describe(hold)})")
            return 1
        if report.dry_run:
            report.deleted.append(reference)
            return 1
        try:
            async with store.transaction() as tx:
                repo = Repository.system(store, reason=f"retention of {reference}", tx=tx)
                await repo.delete(stored.version.resource_type, stored.version.id, if_match=stored.etag)
                if self.audit is not None:
                    await self.audit.record_in(store, tx, deletion_event(reference, owners(stored.resource), WHO))
        except OperationOutcomeError as error:
            if error.status not in (409, 412):
                raise
            report.changed.append(reference)  # held or updated since it was found: not this run's to delete
            return 1
        report.deleted.append(reference)
        return 0

    async def _claim(self, store: ResourceStore, owner: str) -> bool:
        """Take (or renew) the tenant's retention lease unless another run holds an unexpired one.

        Measured on the clock, never on a run's ``now`` (which ``--as-of`` may move)."""
        clock = time.time()
        async with store.transaction() as tx:
            current = await tx.get_record(LEASE_COLLECTION, LEASE_KEY)
            if current is not None:
                held = orjson.loads(current.body)
                if held["owner"] != owner and held["expires"] > clock:
                    return False
            body = {"owner": owner, "expires": clock + self.lease_seconds}
            await tx.put_record(Record(LEASE_COLLECTION, LEASE_KEY, orjson.dumps(body)))
            return True

    async def _release(self, store: ResourceStore, owner: str) -> None:
        async with store.transaction() as tx:
            current = await tx.get_record(LEASE_COLLECTION, LEASE_KEY)
            if current is not None and orjson.loads(current.body)["owner"] == owner:
                await tx.delete_record(LEASE_COLLECTION, LEASE_KEY)
