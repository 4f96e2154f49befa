"""Putting a case's images back in the analysis queue (DESIGN data flow 2): one
``imaging.instance-stored`` outbox event per image, as the node appends when it stores one, so the
inference worker analyses what it has not analysed yet (it skips images that have their results).

- ``POST DiagnosticReport/{id}/$analyze`` re-queues one case, e.g. after its Consent arrived.
- ``requeue_patient`` re-queues every open case (registered, partial, preliminary) of a patient:
  the consent watcher calls it when a Consent that permits the AI analysis arrives or changes.
- ``requeue_study`` re-queues the case of one study: the images held while the study's patient
  identity was under review (``inference.identity_hold``) once it is confirmed or merged.
"""

from __future__ import annotations

from typing import Any

from dicom_node.attributes import INSTANCE
from dicom_node.fhir_sync import DICOM_UID_SYSTEM
from fhir_server.api.messages import FhirRequest, FhirResponse
from fhir_server.consent.decision import AI_ANALYSIS, decide
from fhir_server.errors import outcome
from fhir_server.operation_definitions import operation_definition, returns
from fhir_server.repository import Repository

INSTANCE_STORED = "imaging.instance-stored"
OPEN_CASES = "registered,partial,preliminary"
MAX_IMAGES = 1000
MAX_CASES = 1000


def _local(reference: Any, resource_type: str) -> str | None:
    text = reference.get("reference") if isinstance(reference, dict) else None
    prefix = f"{resource_type}/"
    return text.removeprefix(prefix) if isinstance(text, str) and text.startswith(prefix) else None


async def _image_event(repo: Repository, report_id: str, media_id: str) -> dict[str, Any] | None:
    """The event of one image of the case, from its Media and the instance's index record."""
    media = await repo.current("Media", media_id)
    if media is None:
        return None
    uids = [str(i.get("value", "")) for i in media.get("identifier", []) if i.get("system") == DICOM_UID_SYSTEM]
    uid = next((u.removeprefix("urn:oid:") for u in uids if u.startswith("urn:oid:")), None)
    record = await (repo.transaction or repo.store).get_record(INSTANCE, uid) if uid else None
    patient, study = _local(media.get("subject"), "Patient"), _local((media.get("partOf") or [None])[0], "ImagingStudy")
    if record is None or patient is None or study is None:
        return None  # erased, replaced, or not a DICOM image of this node
    return {"tenant": repo.tenant, "study": record.fields["StudyInstanceUID"][0],
            "series": record.fields["SeriesInstanceUID"][0], "instance": record.key, "patient": patient,
            "imagingStudy": study, "media": media_id, "report": report_id, "requeued": True,
            "sopClass": (record.fields.get("SOPClassUID") or ("",))[0]}  # fmt: skip


async def requeue_case(repo: Repository, report: dict[str, Any]) -> int:
    """One ``imaging.instance-stored`` event per image of the case, in the repository's transaction;
    returns how many."""
    tx = repo.transaction
    assert tx is not None, "events are appended in a transaction"
    count = 0
    for link in (report.get("media") or [])[:MAX_IMAGES]:
        media_id = _local((link or {}).get("link"), "Media")
        event = await _image_event(repo, str(report["id"]), media_id) if media_id else None
        if event is not None:
            await tx.append_event(INSTANCE_STORED, event)
            count += 1
    return count


async def requeue_patient(repo: Repository, patient_id: str) -> int:
    """Re-queue the images of every open case of the patient; returns how many images."""
    criteria = [("subject", f"Patient/{patient_id}"), ("status", OPEN_CASES)]
    count = 0
    for report in await repo.find("DiagnosticReport", criteria, MAX_CASES):
        count += await requeue_case(repo, report.resource)
    return count


async def requeue_study(repo: Repository, study_uid: str) -> dict[str, int]:
    """Re-queue the images of the case of one DICOM study (e.g. once its patient's identity is
    confirmed), in the repository's transaction; returns the images re-queued per case."""
    criteria = [("identifier", f"{DICOM_UID_SYSTEM}|urn:oid:{study_uid}")]
    return {
        str(r.resource["id"]): await requeue_case(repo, r.resource)
        for r in await repo.find("DiagnosticReport", criteria, 10)
    }


async def analyze(repo: Repository, request: FhirRequest, resource_type: str | None, id: str | None) -> FhirResponse:
    """``POST DiagnosticReport/{id}/$analyze``: the case's images back in the analysis queue."""
    assert id is not None
    report = await repo.read("DiagnosticReport", id)
    async with repo.store.transaction() as tx:
        count = await requeue_case(repo.within(tx), report.resource)
    patient = _local(report.resource.get("subject"), "Patient")
    issues = [outcome("information", "informational", f"{count} image(s) of DiagnosticReport/{id} queued for "
                      "analysis; images analysed before are not analysed again")["issue"][0]]  # fmt: skip
    decision = await decide(repo, patient, AI_ANALYSIS) if patient else None
    if decision is not None and not decision.permit:
        issues.append(outcome("warning", "suppressed", f"no AI analysis will happen: {decision.reason}")["issue"][0])
    return FhirResponse(200, {"resourceType": "OperationOutcome", "issue": issues})


ANALYZE_DEFINITION = operation_definition(
    "analyze",
    level="instance",
    resource=["DiagnosticReport"],
    description="Puts the case's images back in the AI analysis queue (e.g. once a Consent permits it). Images "
    "that have their results are not analysed again; the consent gate applies as for a new image.",
    parameters=[returns("OperationOutcome")],
)
