"""The retention job on a schedule inside the server: every tenant, every ``interval`` seconds.

Every process may run it: the job's lease (``fhir_server.retention.job``) keeps two from working on one
tenant at once. A failed run is logged and retried at the next tick; it never stops the server."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fhir_server.retention.job import RetentionJob
from fhir_server.storage.port import Engine

log = logging.getLogger(__name__)


class RetentionSchedule:
    def __init__(self, engine: Engine, job: RetentionJob, interval: float) -> None:
        self.engine = engine
        self.job = job
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)  # the first run one interval after start, not at every restart
            for tenant in await self.engine.tenant_names():
                try:
                    report = await asyncio.shield(self.job.run(await self.engine.tenant(tenant)))
                    if report.claimed:
                        log.info("retention of tenant %s: %s", tenant, report.counts)
                except Exception:
                    log.exception("retention of tenant %s failed; the next run retries", tenant)
