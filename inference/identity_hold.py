"""AI analysis held while an image's patient identity is in question (issue 13, patient matching).

When a DICOM study's demographics contradict the Patient its identifier matched
(``dicom_node.patient_match`` opens a "patient identity review" Task for the study), its images may
belong to someone else: analysing them under this Patient's Consent, and writing findings into this
Patient's record, could be both unlawful and clinically wrong. So:

- the worker analyses no image of a study whose identity review is not ``completed`` (a rejected or
  cancelled review confirms nothing); the case gets an ``on-hold`` Task (code ``ai-analysis-hold``,
  focus the case) saying why and which review it waits for, and an AuditEvent;
- the hold is released when the review Task is completed (the reviewer confirmed the identity), or
  when ``Patient/$merge`` settles the record (every unresolved review of the surviving Patient is
  completed, with a note naming the merge); the study's images then go back in the analysis queue
  (``dicom_node.analysis_queue``, the path ``$analyze`` and a late Consent use), the consent gate
  applies as for a new image, and the hold Tasks are completed with the reason.

``release_held`` handles the ``resource.updated`` events (FHIR Task and Patient) that the
inference worker claims anyway (no consumer of its own: one more would add a claim and an
acknowledgement, two writes, to every commit, in the findings' latency path); idempotent: each Task
version and each merge releases at most once (a marker record commits with the events).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson

from dicom_node.analysis_queue import requeue_study
from dicom_node.patient_match import DICOM_UID_SYSTEM, IDENTITY_REVIEW
from fhir_server.identity.merge_input import linked
from fhir_server.repository import Repository, Stored
from fhir_server.storage.port import OutboxEvent, Record, TenantStore
from inference.results import ImageContext
from inference.tasks import TASK_SYSTEM, _task, _task_once

log = logging.getLogger(__name__)
REVIEW_CODE = f"{TASK_SYSTEM}|{IDENTITY_REVIEW['coding'][0]['code']}"
HOLD = "ai-analysis-hold"
HOLD_CODE = {
    "coding": [{"system": TASK_SYSTEM, "code": HOLD, "display": "AI analysis held for patient identity review"}]
}
RELEASED = "identity.released"
MAX_TASKS = 100


def _reviewed_studies(review: dict[str, Any]) -> set[str]:
    """The DICOM study UIDs an identity review Task is about (its ``input`` identifiers)."""
    values = [(i.get("valueIdentifier") or {}) for i in review.get("input", []) if (i.get("type") or {}).get("text")
              == "DICOM study"]  # fmt: skip
    return {str(v.get("value", "")).removeprefix("urn:oid:") for v in values if v.get("system") == DICOM_UID_SYSTEM}


async def unresolved_review(repo: Repository, patient_id: str, study_uid: str) -> Stored | None:
    """The identity review of this patient's study that is not completed, if any."""
    criteria = [("patient", f"Patient/{patient_id}"), ("code", REVIEW_CODE)]
    for stored in await repo.find("Task", criteria, MAX_TASKS):
        if stored.resource.get("status") != "completed" and study_uid in _reviewed_studies(stored.resource):
            return stored
    return None


def _doubt(review: dict[str, Any]) -> str:
    """What put the image's identity in question: an order of another patient (``dicom_node.order_match``),
    else the demographics (``dicom_node.patient_match``)."""
    if any((i.get("type") or {}).get("text") == "accession number" for i in review.get("input", [])):
        return "the image's Accession Number names another patient's case"
    return "the image's patient demographics differ from the matched Patient's record"


def hold_reason(review: Stored) -> str:
    return (f"AI analysis held: {_doubt(review.resource)} "
            f"(identity review Task/{review.resource['id']}, {review.resource.get('status')}); the image is analysed "
            "once the identity is confirmed (the review Task completed) or the records are merged "
            "(Patient/$merge)")  # fmt: skip


async def record_hold(repo: Repository, context: ImageContext, review: Stored) -> Stored:
    """The case's on-hold Task for this image (once per image), naming the review it waits for."""
    task = _task(context, "on-hold", HOLD_CODE, hold_reason(review))
    task["input"].append({"type": {"text": "patient identity review"},
                          "valueReference": {"reference": f"Task/{review.resource['id']}"}})  # fmt: skip
    return await _task_once(repo, task, f"held-{context.instance_uid}")


async def _complete_holds(repo: Repository, report_id: str, why: str) -> None:
    criteria = [("focus", f"DiagnosticReport/{report_id}"), ("code", f"{TASK_SYSTEM}|{HOLD}"), ("status", "on-hold")]
    for stored in await repo.find("Task", criteria, MAX_TASKS):
        await _complete(repo, stored, reason=f"Hold released: {why}; the image is queued for AI analysis again")


async def _complete(repo: Repository, stored: Stored, *, reason: str | None = None, note: str | None = None) -> None:
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    task = {**stored.resource, "status": "completed", "lastModified": now}
    if reason is not None:
        task["statusReason"] = {"text": reason}
    if note is not None:
        task["note"] = [*stored.resource.get("note", []), {"time": now, "text": note}]
    await repo.update(task, resource_type="Task", id=str(task["id"]), server_built=True)


async def release(repo: Repository, review: dict[str, Any], why: str) -> int:
    """The reviewed studies' images back in the analysis queue and their holds completed, in the
    repository's transaction; returns how many images."""
    count = 0
    for uid in sorted(_reviewed_studies(review)):
        for report_id, images in (await requeue_study(repo, uid)).items():
            await _complete_holds(repo, report_id, why)
            count += images
    return count


async def release_held(store: TenantStore, event: OutboxEvent) -> None:
    """Act on a ``resource.updated`` event: a completed identity review releases its studies' held
    images; a Patient retired by ``$merge`` (``replaced-by``) completes its and its survivor's
    unresolved reviews (whose own events then release the images)."""
    kind = event.payload.get("type")
    if kind not in ("Task", "Patient"):
        return
    repo = Repository.system(store, reason="release of images held for patient identity review")
    current = await repo.current(str(kind), str(event.payload["id"]))
    if current is None:
        return
    if kind == "Patient":
        await _merged(repo, current)
    elif current.get("status") == "completed" and _is_review(current):
        await _completed(repo, current, str(event.payload.get("version")))


async def _merged(repo: Repository, source: dict[str, Any]) -> None:
    survivors = linked(source, "replaced-by")
    if not survivors:
        return
    why = f"Patient/{source['id']} was merged into Patient/{survivors[0]} (Patient/$merge)"
    marker = f"merge/Patient/{source['id']}"  # once per merge, not on later edits of the retired record
    async with repo.store.transaction() as tx:
        if await tx.get_record(RELEASED, marker) is not None:
            return
        bound = repo.within(tx)
        reviews = {str(stored.resource["id"]): stored for patient in (str(source["id"]), survivors[0])
                   for stored in await bound.find("Task", [("patient", f"Patient/{patient}"),
                                                           ("code", REVIEW_CODE)], MAX_TASKS)}.values()  # fmt: skip
        await tx.put_record(Record(RELEASED, marker, orjson.dumps({"reviews": len(reviews)}), {}))
        for stored in reviews:
            if stored.resource.get("status") != "completed":
                await _complete(bound, stored, note=f"Resolved: {why}")


async def _completed(repo: Repository, review: dict[str, Any], version: str) -> None:
    marker = f"Task/{review['id']}/{version}"
    async with repo.store.transaction() as tx:
        if await tx.get_record(RELEASED, marker) is not None:
            return
        why = f"the patient identity review Task/{review['id']} was completed"
        count = await release(repo.within(tx), review, why)
        await tx.put_record(Record(RELEASED, marker, orjson.dumps({"images": count}), {}))
    log.info("%s completed: %d held image(s) queued for analysis again", marker, count)


def _is_review(task: dict[str, Any]) -> bool:
    return any(f"{c.get('system')}|{c.get('code')}" == REVIEW_CODE for c in (task.get("code") or {}).get("coding", []))
