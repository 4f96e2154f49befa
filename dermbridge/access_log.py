"""One log line and the HTTP metrics of every request (ASGI middleware around the whole app).

The line (logger ``dermbridge.access``, INFO) and the metrics name the request by its route template
(``route_template``), never by its path or query: no resource id, name, identifier or token reaches
either. The line has the method, template, status, duration, the authenticated client's id (noted by the
authentication layer: ``fhir_server.security.caller_note``) and the tenant of the URL. Probes of
``/healthz``, ``/readyz`` and ``/metrics`` are counted but not logged.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dermbridge.metrics import HTTP_REQUESTS, HTTP_SECONDS
from dermbridge.route_template import RouteTemplates
from fhir_server.security.caller_note import noting

log = logging.getLogger("dermbridge.access")
QUIET = frozenset({"/healthz", "/readyz", "/metrics"})
_TENANT = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")  # a tenant name (storage): else not logged


class AccessLog:
    def __init__(self, app: ASGIApp, templates: RouteTemplates) -> None:
        self.app = app
        self.templates = templates
        # the labelled series, looked up once each (``labels`` takes a lock and builds a key on every call);
        # bounded like the labels: methods x templates x statuses
        self._counted: dict[tuple[str, str, int], Any] = {}
        self._timed: dict[tuple[str, str], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless a response starts: an exception escaped every handler

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        with noting() as note:
            try:
                await self.app(scope, receive, sending)
            finally:
                self._done(scope, status, time.perf_counter() - started, note.client_id)

    def _done(self, scope: Scope, status: int, seconds: float, client_id: str | None) -> None:
        route, method = self.templates.of(scope), str(scope.get("method", ""))
        if (counted := self._counted.get((method, route, status))) is None:
            counted = self._counted[method, route, status] = HTTP_REQUESTS.labels(method, route, str(status))
        if (timed := self._timed.get((method, route))) is None:
            timed = self._timed[method, route] = HTTP_SECONDS.labels(method, route)
        counted.inc()
        timed.observe(seconds)
        if route in QUIET:
            return
        fields: dict[str, Any] = {"event": "http.request", "method": method, "route": route, "status": status,
                                  "duration_ms": round(seconds * 1000, 2), "client_id": client_id,
                                  "tenant": _tenant(scope)}  # fmt: skip
        log.info("%s %s %s %.1f ms", method, route, status, seconds * 1000, extra={"fields": fields})


def _tenant(scope: Scope) -> str | None:
    """The URL's tenant when it is a well-formed tenant name (a mistyped one could be anything)."""
    tenant = (scope.get("path_params") or {}).get("tenant")
    return tenant if isinstance(tenant, str) and _TENANT.fullmatch(tenant) else None
