"""The state of each delivery (one object to one destination), kept as a record of the tenant so that every
process sees it and the HTTP API can list it, in the manner of Orthanc's ``/jobs`` and Google Cloud Healthcare's
export operations: ``pending`` (queued or waiting for a retry), ``sent`` or ``failed`` (attempts exhausted, or a
permanent failure), with its attempts, last error, the DIMSE status the destination answered and the transfer
syntax sent. A job's key is ``{destination}:{SOP Instance UID}``: an object is sent once per destination,
however often its events are delivered, unless a stored version replaces it with other content (``digest``: the
SHA-256 of the stored bytes); then its job is pending again, so the destination gets the new version.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from dicom_node.forwarding.config import Destination
from fhir_server.storage.port import Record, TenantTransaction

JOBS = "dicom.forward-job"
PENDING, SENT, FAILED = "pending", "sent", "failed"
STATES = (PENDING, SENT, FAILED)


@dataclass(frozen=True, slots=True)
class ForwardedObject:
    study: str
    series: str
    instance: str
    sop_class: str
    kind: str
    digest: str = ""  # of the stored bytes; "" when not known (a derived object, an event from before it)


def job_key(destination: str, instance: str) -> str:
    return f"{destination}:{instance}"


def now_text(offset_seconds: float = 0.0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=offset_seconds)).isoformat(timespec="milliseconds")


def _record(body: dict[str, Any]) -> Record:
    pairs = (("state", "state"), ("destination", "destination"), ("StudyInstanceUID", "study"), ("kind", "kind"))
    fields: dict[str, tuple[str, ...]] = {name: (str(body[key]),) for name, key in pairs}
    return Record(JOBS, body["id"], orjson.dumps(body), fields)


def job_body(record: Record) -> dict[str, Any]:
    body: dict[str, Any] = orjson.loads(record.body)
    return body


async def open_job(tx: TenantTransaction, destination: Destination, obj: ForwardedObject, max_attempts: int) -> bool:
    """A pending job for ``obj`` to ``destination``; False when one exists already (any state) for the same content.
    A job for other content (the object was replaced by a different version) is pending again (True)."""
    key = job_key(destination.name, obj.instance)
    if (existing := await tx.get_record(JOBS, key)) is not None:
        known = str(job_body(existing).get("digest") or "")
        if not (obj.digest and known and obj.digest != known):
            if obj.digest and not known:  # a job from before digests: this content is the one it sends
                await tx.put_record(_record({**job_body(existing), "digest": obj.digest}))
            return False
        await requeue(tx, existing, max_attempts, digest=obj.digest)
        return True
    created = now_text()
    await tx.put_record(_record({
        "id": key, "destination": destination.name, "destinationAE": destination.ae_title,
        "study": obj.study, "series": obj.series, "instance": obj.instance, "sopClass": obj.sop_class,
        "kind": obj.kind, "state": PENDING, "attempts": 0, "maxAttempts": max_attempts, "created": created,
        "updated": created, **({"digest": obj.digest} if obj.digest else {}),
    }))  # fmt: skip
    return True


@dataclass(frozen=True, slots=True)
class Outcome:
    """One attempt's result: ``state`` after it (pending: a retry follows at ``retry_in`` seconds)."""

    job: str
    state: str
    attempts: int
    error: str = ""
    dimse_status: int | None = None
    syntax: str = ""
    retry_in: float | None = None


async def record_outcome(tx: TenantTransaction, outcome: Outcome, digest: str | None = None) -> dict[str, Any] | None:
    """The job's record after an attempt; None when the job is gone. ``digest``: the content the attempt sent,
    as its job said when claimed; when a replacing version has reopened the job since, the job is left pending
    for that version's own attempt."""
    record = await tx.get_record(JOBS, outcome.job)
    if record is None:
        return None
    if digest is not None and str(job_body(record).get("digest") or "") != digest:
        return job_body(record)
    body = {**job_body(record), "state": outcome.state, "attempts": outcome.attempts, "updated": now_text()}
    body.pop("nextAttempt", None)
    if outcome.dimse_status is not None:
        body["dimseStatus"] = f"0x{outcome.dimse_status:04X}"
    if outcome.syntax:
        body["transferSyntax"] = outcome.syntax
    if outcome.error:
        body["lastError"] = outcome.error[:500]
    if outcome.state == SENT:
        body["sent"] = body["updated"]
        body.pop("lastError", None)
    if outcome.retry_in is not None:
        body["nextAttempt"] = now_text(outcome.retry_in)
    await tx.put_record(_record(body))
    return body


async def requeue(tx: TenantTransaction, record: Record, max_attempts: int, *, digest: str = "") -> dict[str, Any]:
    """A failed (or sent) job pending again, its attempts counted anew (an operator's retry, or a replacing version
    of its object with content ``digest``)."""
    body = {**job_body(record), "state": PENDING, "attempts": 0, "maxAttempts": max_attempts, "updated": now_text()}
    if digest:
        body["digest"] = digest
    for stale in ("nextAttempt", "lastError", "dimseStatus"):
        body.pop(stale, None)
    await tx.put_record(_record(body))
    return body
