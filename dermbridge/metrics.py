"""Prometheus ``/metrics`` of every role (prometheus-client, text exposition format 0.0.4).

Labels are bounded and carry no personal data: method, route template, status, outbox consumer, DIMSE
operation and outcome, model and step; never a path, resource id, tenant, AE title or address. Gauges
of the database (outbox backlog per consumer, audit staging lag, pool usage) are read at each scrape
(``Sampler``), bounded by ``SAMPLE_SECONDS``. The DIMSE metrics are ``dicom_node.association_log``'s, the
inference ones ``inference.metrics``'; they share the process's default registry.

Access: a caller on loopback, or one presenting ``Authorization: Bearer <DERMBRIDGE_METRICS_TOKEN>``
when that is set; anyone else gets 403 (metrics reveal load and tenants' activity, not data).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
from collections import defaultdict

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest

from fhir_server.storage.port import Engine
from fhir_server.storage.probes import audit_staged_probe, backlog_probe, pool_probe

log = logging.getLogger(__name__)
SAMPLE_SECONDS = 5.0

HTTP_REQUESTS = Counter("dermbridge_http_requests", "HTTP requests answered", ["method", "route", "status"])
HTTP_SECONDS = Histogram("dermbridge_http_request_duration_seconds", "HTTP request latency", ["method", "route"])
OUTBOX_PENDING = Gauge("dermbridge_outbox_pending_events", "outbox events not yet acknowledged", ["consumer"])
OUTBOX_AGE = Gauge("dermbridge_outbox_oldest_pending_seconds", "age of the oldest unacknowledged event", ["consumer"])
AUDIT_STAGED = Gauge("dermbridge_audit_staged_events", "AuditEvents staged and not yet loaded into the chain")
POOL_SIZE = Gauge("dermbridge_db_pool_connections", "database connections of this process's pools")
POOL_IN_USE = Gauge("dermbridge_db_pool_connections_in_use", "of those, busy at the scrape")
SAMPLE_FAILURES = Counter("dermbridge_metrics_sample_failures", "scrapes whose database figures could not be read")


class Sampler:
    """The database's gauges, read when scraped: summed over the tenants (a tenant is no label)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def sample(self) -> None:
        try:
            async with asyncio.timeout(SAMPLE_SECONDS):
                await self._sample()
        except Exception:
            SAMPLE_FAILURES.inc()
            log.warning("the database figures of /metrics could not be read", exc_info=True)

    async def _sample(self) -> None:
        backlogs = backlog_probe(self.engine)
        pending: dict[str, int] = defaultdict(int)
        oldest: dict[str, float] = defaultdict(float)
        staged = 0
        staged_probe = audit_staged_probe(self.engine)
        for tenant in await self.engine.tenant_names():
            staged += await self._staged(tenant) if staged_probe is None else await staged_probe.audit_staged(tenant)
            for backlog in await backlogs.outbox_backlog(tenant) if backlogs is not None else []:
                pending[backlog.consumer] += backlog.pending
                oldest[backlog.consumer] = max(oldest[backlog.consumer], backlog.oldest_age_seconds)
        for consumer, count in pending.items():
            OUTBOX_PENDING.labels(consumer).set(count)
            OUTBOX_AGE.labels(consumer).set(oldest[consumer])
        AUDIT_STAGED.set(staged)
        if (pool := pool_probe(self.engine)) is not None:
            usage = pool.pool_usage()
            POOL_SIZE.set(usage.size)
            POOL_IN_USE.set(usage.in_use)

    async def _staged(self, tenant: str) -> int:
        staging = await (await self.engine.tenant(tenant)).audit_staging()
        return max(0, staging.staged_seq - staging.loaded_seq)


router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    if not _may_scrape(request, request.app.state.settings.metrics_token):
        return Response("metrics: loopback callers, or the metrics bearer token\n", 403, media_type="text/plain")
    await request.app.state.sampler.sample()
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


def _may_scrape(request: Request, token: str | None) -> bool:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if token and scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
        return True
    try:
        return request.client is not None and ipaddress.ip_address(request.client.host).is_loopback
    except ValueError:
        return False
