"""The retention job on a schedule inside the server: every tenant, every ``interval`` seconds.

Every process may run it: the job's lease (``fhir_server.retention.job``) keeps two from working on one
tenant at once. A failed run is logged and retried at the next tick; it never stops the server."""

from __future__ import annotations

import logging

from fhir_server.periodic import Periodic
from fhir_server.retention.job import RetentionJob
from fhir_server.storage.port import Engine

log = logging.getLogger(__name__)


class RetentionSchedule(Periodic):
    name = "retention-schedule"

    def __init__(self, engine: Engine, job: RetentionJob, interval: float) -> None:
        super().__init__(interval)  # the first run one interval after start, not at every restart
        self.engine = engine
        self.job = job

    async def run(self) -> None:
        for tenant in await self.engine.tenant_names():
            try:
                report = await self.job.run(await self.engine.tenant(tenant))
                if report.claimed:
                    log.info("retention of tenant %s: %s", tenant, report.counts)
            except Exception:
                log.exception("retention of tenant %s failed; the next run retries", tenant)
