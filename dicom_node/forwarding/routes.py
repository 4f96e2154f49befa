"""The forwarding status over HTTP, for a PACS administrator (in the manner of Orthanc's ``/jobs`` and Google
Cloud Healthcare's export operations): each delivery of an object to a destination with its state, attempts,
last error, DIMSE status and transfer syntax, and a retry of a failed one.

    GET  /forwarding/{tenant}/jobs?state=failed&destination=pacs&study=1.2.3&kind=ai-results&_count=100&_offset=0
    GET  /forwarding/{tenant}/jobs/{destination}:{SOP Instance UID}
    POST /forwarding/{tenant}/jobs/{destination}:{SOP Instance UID}/$retry

Access is the ``AccessPolicy``'s, as for DICOMweb: listing needs what QIDO-RS needs (search on ImagingStudy, read
on Patient) under a ``user/`` or ``system/`` scope (jobs span patients: a ``patient/`` scope gets 403); a retry
needs update on ImagingStudy too and is audited. Errors are OperationOutcomes.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from dicom_node.forwarding.audit import retry_event
from dicom_node.forwarding.config import read_forwarding
from dicom_node.forwarding.events import FORWARD, KINDS, ForwardRequested
from dicom_node.forwarding.jobs import JOBS, PENDING, STATES, job_body, requeue
from dicom_node.web.routes import CallerDep
from fhir_server.audit.trail import AuditTrail
from fhir_server.errors import bad_request, conflict, forbidden, not_found
from fhir_server.security.policy import AccessPolicy
from fhir_server.storage.port import TenantStore, TenantUnknownError
from fhir_server.storage.query import FieldMatch, RecordQuery

router = APIRouter(prefix="/forwarding/{tenant}", include_in_schema=False)
MAX_COUNT = 1000


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")


def _watcher(policy: CallerDep) -> AccessPolicy:
    """What QIDO-RS needs, for every patient: jobs of all patients' objects are listed together."""
    if policy.read_dicom("s") != "all":
        raise forbidden("the forwarding status needs search on ImagingStudy and read on Patient under a user/ or "
                        "system/ scope")  # fmt: skip
    return policy


WatcherDep = Annotated[AccessPolicy, Depends(_watcher)]


async def _store(request: Request, tenant: str) -> TenantStore:
    try:
        store: TenantStore = await request.app.state.engine.tenant(tenant)
    except TenantUnknownError:
        raise not_found("unknown tenant") from None
    return store


def _job_query(state: str | None, destination: str | None, study: str | None, kind: str | None) -> list[FieldMatch]:
    where = []
    if state is not None and state not in STATES:
        raise bad_request(f"state: one of {list(STATES)}", ["state"])
    if kind is not None and kind not in KINDS:
        raise bad_request(f"kind: one of {list(KINDS)}", ["kind"])
    for name, value in (("state", state), ("destination", destination), ("StudyInstanceUID", study), ("kind", kind)):
        if value is not None:
            if len(value) > 64:
                raise bad_request(f"{name}: at most 64 characters", [name])
            where.append(FieldMatch(name, "eq", (value,)))
    return where


@router.get("/jobs")
async def list_jobs(
    request: Request, tenant: str, policy: WatcherDep, state: str | None = None, destination: str | None = None,
    study: str | None = None, kind: str | None = None,
    count: Annotated[int, Query(alias="_count", ge=1, le=MAX_COUNT)] = 100,
    offset: Annotated[int, Query(alias="_offset", ge=0, le=10**9)] = 0,
) -> Response:  # fmt: skip
    """The jobs matching every filter given, by destination and SOP Instance UID."""
    store = await _store(request, tenant)
    where = _job_query(state, destination, study, kind)
    records = await store.find_records(RecordQuery(JOBS, tuple(where), count + 1, offset))
    jobs = [job_body(r) for r in records[:count]]
    body: dict[str, Any] = {"jobs": jobs, "offset": offset, "count": len(jobs)}
    if len(records) > count:
        body["next"] = str(request.url.include_query_params(_offset=offset + count))
    return _json(body)


@router.get("/jobs/{job}")
async def read_job(request: Request, tenant: str, job: str, policy: WatcherDep) -> Response:
    store = await _store(request, tenant)
    record = await store.get_record(JOBS, job[:200])
    if record is None:
        raise not_found(f"no forwarding job {job[:200]!r}")
    return _json(job_body(record))


@router.post("/jobs/{job}/$retry")
async def retry_job(request: Request, tenant: str, job: str, policy: WatcherDep) -> Response:
    """A failed or sent job queued again with its attempts counted anew (Orthanc's ``/jobs/{id}/resubmit``)."""
    if policy.require("ImagingStudy", "u") != "all":
        raise forbidden("a retry needs update on ImagingStudy under a user/ or system/ scope")
    store = await _store(request, tenant)
    forwarding = await read_forwarding(store)
    async with store.transaction() as tx:
        record = await tx.get_record(JOBS, job[:200])
        if record is None:
            raise not_found(f"no forwarding job {job[:200]!r}")
        current = job_body(record)
        if current.get("state") == PENDING:
            raise conflict(f"the job {job} is pending already (attempt {current.get('attempts', 0)})")
        if current["destination"] not in forwarding.destinations:
            raise conflict(f"the destination {current['destination']!r} is no longer configured")
        body = await requeue(tx, record, forwarding.max_attempts)
        await tx.append_event(FORWARD, ForwardRequested(body["id"], body["destination"], body["instance"]).payload())
        audit: AuditTrail | None = request.app.state.audit
        if audit is not None:
            who = policy.access.subject if policy.access is not None else str(policy.system_reason)
            fhir_user = policy.access.fhir_user if policy.access is not None else None
            await audit.record_in(store, tx, retry_event(body, who, fhir_user))
    return _json(body, 202)
