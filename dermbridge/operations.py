"""What every role serves for its operators: ``/healthz``, ``/readyz``, ``/metrics``, the access log
(``health``, ``metrics``, ``access_log``), and the audit role's sweep of staged AuditEvents."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection

from fastapi import FastAPI

from dermbridge.access_log import AccessLog
from dermbridge.health import router as health_router
from dermbridge.metrics import Sampler
from dermbridge.metrics import router as metrics_router
from dermbridge.roles import plan_for
from dermbridge.route_template import RouteTemplates
from dermbridge.settings import Settings
from fhir_server.audit.sweep import StagedAuditSweep
from fhir_server.audit.trail import AuditTrail
from fhir_server.outbox import OutboxLoop
from fhir_server.storage.port import Engine

STOP_SECONDS = 20.0
log = logging.getLogger(__name__)


def install_operations(app: FastAPI, engine: Engine, operations: Collection[str]) -> None:
    app.state.sampler = Sampler(engine)
    app.state.parts = {"start-up": lambda: False}  # until the lifespan has started this role's parts
    app.include_router(health_router)
    app.include_router(metrics_router)
    app.add_middleware(AccessLog, templates=RouteTemplates(operations))


def start_audit_sweep(settings: Settings, engine: Engine, audit: AuditTrail | None) -> StagedAuditSweep | None:
    """The audit role's loader of every tenant's staged AuditEvents (``fhir_server.audit.sweep``)."""
    if audit is None or not plan_for(settings.role).audit_loader:
        return None
    sweep = StagedAuditSweep(engine, audit, settings.audit_poll_seconds)
    sweep.start()
    return sweep


async def stop_worker(worker: OutboxLoop) -> None:
    """Stops an outbox worker (the inference worker) within ``STOP_SECONDS`` (a round in progress ends at
    its next await), else says so and lets the process close."""
    try:
        async with asyncio.timeout(STOP_SECONDS):
            await worker.stop()
    except TimeoutError:
        log.error("%s did not stop within %s s; closing", worker.name, STOP_SECONDS)
