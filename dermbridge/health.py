"""``/healthz`` and ``/readyz`` of every role (the Kubernetes probe convention).

``/healthz``: the process answers (liveness; it checks nothing else, so a slow database never gets a
live process restarted). ``/readyz``: 200 when this process can do its work: the database answers
(the default tenant is read), its schema is at the version this code expects (the engine's probe,
``fhir_server.storage.probes``), the DICOM object store answers and can be written (``BlobStore.probe``),
and every background part of this role is running (``RolePlan.workers``);
else 503 with the failing checks named. Both bodies are JSON and carry no data.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from dicom_node.blobs import BlobStore
from fhir_server.storage.port import Engine, TenantUnknownError
from fhir_server.storage.probes import schema_probe

CHECK_SECONDS = 5.0
Running = Callable[[], bool]

router = APIRouter()


@router.get("/healthz", include_in_schema=False)
async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "alive", "role": request.app.state.settings.role})


@router.get("/readyz", include_in_schema=False)
async def readyz(request: Request) -> JSONResponse:
    state = request.app.state
    checks = await readiness(state.engine, state.settings.default_tenant, state.parts, state.ingestor.blobs)
    ready = all(value == "ok" for value in checks.values())
    body = {"status": "ready" if ready else "not ready", "role": state.settings.role, "checks": checks}
    return JSONResponse(body, 200 if ready else 503)


async def readiness(
    engine: Engine, tenant: str, parts: dict[str, Running], blobs: BlobStore | None = None
) -> dict[str, str]:
    """Each check's result: ``ok``, or why not."""
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(CHECK_SECONDS):
            await (await engine.tenant(tenant)).audit_staging()  # a read on the tenant's database
            checks["database"] = "ok"
            probe = schema_probe(engine)
            current = probe is None or await probe.schema_current(tenant)
            checks["migrations"] = "ok" if current else "the schema is not at this version: run the migrations"
    except TenantUnknownError:  # the database answered: the tenant is what is missing
        checks["database"] = f"reachable, but tenant {tenant!r} does not exist: run `dermbridge tenant create {tenant}`"
    except Exception as exc:  # unreachable, or locked beyond the bound
        checks["database"] = f"unreachable: {type(exc).__name__}"
    if blobs is not None:
        try:
            async with asyncio.timeout(CHECK_SECONDS):
                await blobs.probe()
            checks["blobs"] = "ok"
        except Exception as exc:  # unreachable or not writable
            checks["blobs"] = f"unavailable: {type(exc).__name__}"
    for name, running in parts.items():
        checks[name] = "ok" if running() else "not running"
    return checks


def parts_of(**parts: Any) -> dict[str, Running]:
    """The ``running`` checks of the started background parts (None: not started in this role)."""
    return {name.replace("_", "-"): _running(part) for name, part in parts.items() if part is not None}


def _running(part: Any) -> Running:
    if hasattr(part, "running"):
        return lambda: bool(part.running)
    return lambda: bool(part.ports)  # the DIMSE server: listening on its ports
