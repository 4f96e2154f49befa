"""The second step's DICOM output (IHE AI Results): an analysed image's results as SR and SEG
(``inference.dicom_results``) stored into its study (``dicom_node.derived``), and linked from FHIR.

FHIR links, all valid R4:

- the study's ``ImagingStudy`` lists the new SR and SEG series (``series.modality`` DCM SR / SEG,
  ``series.instance.title``); the case's ``DiagnosticReport.imagingStudy`` already references that
  ImagingStudy, so the report reaches them;
- each result Observation of the image (the risk results and the predicted diagnosis of this model)
  gets the extension ``urn:dermbridge:dicom-sr`` whose ``valueIdentifier`` is the SR's SOP Instance UID
  (system ``urn:dicom:uid``, ``urn:oid:...``): the same result as a DICOM document. Not ``derivedFrom``:
  in R4 it may name an ImagingStudy but no single instance, and the SR is not what the result was
  derived from (both were made from the image, which ``derivedFrom`` already names). Only ``preliminary``
  results are touched: a clinician's confirmed or amended result is not changed by the AI.

A failure (highdicom refusing an odd source image, a full disk) never loses anything: the findings and
explanations are committed on their own, and the case gets a Task saying the DICOM objects are unavailable
(``inference.explanation_failure``). The objects' UIDs are deterministic, so a redelivered event stores
nothing twice.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pydicom.dataset import Dataset

from dicom_node.blobs import BlobStore
from dicom_node.derived import StudyHome, store_derived
from dicom_node.forwarding.events import AI_RESULTS, INDETERMINATE, DerivedOrigin
from fhir_server.audit.events import DCM
from fhir_server.audit.trail import AuditTrail
from fhir_server.repository import Repository
from fhir_server.storage.port import TenantTransaction
from inference.dicom_results import DICOM_SR_EXTENSION, AiResultObjects, build
from inference.events import analysis_event
from inference.explanation_failure import record_dicom_results_unavailable
from inference.findings import FINDING_SYSTEM, ImageContext, predicted_outcome, result_key
from inference.model_card import ModelCard
from inference.pipeline import Prediction
from inference.segmentation import Segmentation

log = logging.getLogger(__name__)
DICOM_UID_SYSTEM = "urn:dicom:uid"


def lesion_label(context: ImageContext) -> str:
    """The lesion as the SR's Tracking Identifier: where it is, and its FHIR BodyStructure."""
    where = (context.body_site or {}).get("text") or "site not recorded"
    return f"Lesion at {where}" + (f" (BodyStructure/{context.lesion_id})" if context.lesion_id else "")


def _link(sr_uid: str) -> dict[str, Any]:
    return {"url": DICOM_SR_EXTENSION,
            "valueIdentifier": {"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{sr_uid}"}}  # fmt: skip


async def link_results(repo: Repository, context: ImageContext, card: ModelCard, sr_uid: str) -> int:
    """The extension naming the SR on each preliminary result Observation of this image and model."""
    parts = [f"class-{c.index}" for c in card.classes] + ["diagnosis"]
    linked = 0
    for part in parts:
        key = f"{FINDING_SYSTEM}|{result_key(context, card, part)}"
        found = await repo.find("Observation", [("identifier", key)], 1)
        if not found or found[0].resource.get("status") != "preliminary":
            continue
        observation = dict(found[0].resource)
        extensions = [e for e in observation.get("extension", []) if e.get("url") != DICOM_SR_EXTENSION]
        observation["extension"] = [*extensions, _link(sr_uid)]
        await repo.update(observation, resource_type="Observation", id=str(observation["id"]), server_built=True)
        linked += 1
    return linked


def called_tier(card: ModelCard, prediction: Prediction) -> str:
    """The risk tier the model called for the image (``indeterminate``: no call, or an equivocal one), for the
    tenant's forwarding rules (``dicom_node.forwarding.config``)."""
    outcome = predicted_outcome(card, list(prediction.probabilities))
    return INDETERMINATE if outcome is None or outcome.indeterminate else outcome.output.risk_tier


def _audit_event(context: ImageContext, objects: AiResultObjects) -> dict[str, Any]:
    """DICOM "DICOM Instances Accessed" (110103) with action Create: the server made these instances."""
    made = ", ".join(f"{ds.Modality} {ds.SOPInstanceUID}" for ds in (objects.sr, objects.seg) if ds is not None)
    event = analysis_event(context.patient_id, context.media_id, "0", f"AI results stored as DICOM: {made}")
    event["type"] = {"system": DCM, "code": "110103", "display": "DICOM Instances Accessed"}
    event["subtype"] = [{"system": "urn:dermbridge:audit", "code": "ai-dicom-results",
                         "display": "AI results as DICOM"}]  # fmt: skip
    event["action"] = "C"
    return event


async def write_dicom_results(
    repo: Repository, blobs: BlobStore, source: Dataset, context: ImageContext, card: ModelCard,
    prediction: Prediction, segmentation: Segmentation | None, *, server_version: str, weights_sha256: str,
    audit: AuditTrail | None = None,
) -> AiResultObjects | None:  # fmt: skip
    """Build, store and link the SR and SEG of one image's analysis; None when it failed (recorded)."""
    try:
        objects = await asyncio.to_thread(
            build, source, card, list(prediction.probabilities), segmentation, server_version=server_version,
            weights_sha256=weights_sha256, lesion=lesion_label(context),
            lesion_key=context.lesion_id or context.instance_uid,
        )  # fmt: skip
        home = StudyHome(context.patient_id, context.imaging_study_id, context.report_id)
        store = repo.store
        origin = DerivedOrigin(AI_RESULTS, context.instance_uid, called_tier(card, prediction))

        async def recorded(tx: TenantTransaction) -> None:
            if audit is not None:
                await audit.record_in(store, tx, _audit_event(context, objects))

        if objects.seg is not None:
            await store_derived(
                store, blobs, objects.seg, home, title=str(objects.seg.SeriesDescription), origin=origin
            )

        async def linked(bound: Repository) -> None:
            await link_results(bound, context, card, str(objects.sr.SOPInstanceUID))

        await store_derived(store, blobs, objects.sr, home, title=str(objects.sr.SeriesDescription), linked=linked,
                            audit=recorded, origin=origin)  # fmt: skip
        return objects
    except Exception as exc:
        log.exception("the DICOM SR/SEG of instance %s could not be made; the findings stand", context.instance_uid)
        async with repo.store.transaction() as tx:
            await record_dicom_results_unavailable(repo.within(tx), context, f"{type(exc).__name__}: {exc}"[:500])
        return None
