"""The staged-AuditEvent sweep of a ``dermbridge serve --role audit`` process.

Processes that record AuditEvents stage them durably (``AuditTrail.record``); with
``DERMBRIDGE_AUDIT_LOADER=role`` they leave the loading to this sweep, which looks at every tenant every
``interval`` seconds and flushes those whose staging log holds events not yet loaded (stored, chained,
indexed; the trail signs a head every ``checkpoint_every`` events). Several sweeps (or an API process's
own flush before an AuditEvent read) may load the same tenant at once: a load skips what another
already loaded, in the tenant database's transaction (``load_audit``), so nothing is chained twice.
"""

from __future__ import annotations

import logging

from fhir_server.audit.trail import AuditTrail
from fhir_server.periodic import Periodic
from fhir_server.storage.port import Engine

log = logging.getLogger(__name__)


class StagedAuditSweep(Periodic):
    """``AuditTrail.flush`` of every tenant with staged events, every ``interval`` seconds; a failed round is
    logged and retried at the next one."""

    name = "staged-audit-sweep"

    def __init__(self, engine: Engine, trail: AuditTrail, interval: float) -> None:
        super().__init__(interval)
        self.engine, self.trail = engine, trail

    async def run(self) -> int:
        """One round over every tenant; how many events were loaded or indexed."""
        done = 0
        for tenant in await self.engine.tenant_names():
            try:
                store = await self.engine.tenant(tenant)
                staging = await store.audit_staging()
                if staging.staged_seq > staging.loaded_seq:
                    done += await self.trail.flush(store)
            except Exception:
                log.exception("loading the staged AuditEvents of tenant %s failed; the next round retries", tenant)
        return done
