"""The worker's side of the workflow seam (``fhir_server.workflow.events``): what one model found on one
image, as the ``ai.findings-committed`` event appended in the findings' own transaction, and an image a
model did not score as ``ai.not-analysed``."""

from __future__ import annotations

from fhir_server.storage.port import TenantTransaction
from fhir_server.workflow.events import FINDINGS_COMMITTED, NOT_ANALYSED, ClassScore, FindingsCommitted, NotAnalysed
from inference.findings import ImageContext, predicted_outcome
from inference.model_card import ModelCard
from inference.pipeline import Prediction


def findings_committed(context: ImageContext, card: ModelCard, prediction: Prediction,
                       routed: tuple[str, ...]) -> FindingsCommitted:  # fmt: skip
    outcome = predicted_outcome(card, prediction.probabilities)
    scores = tuple(ClassScore(c.code, c.display, c.risk_tier, round(float(prediction.probabilities[c.index]), 4),
                              card.malignant(c.risk_tier), c.threshold) for c in card.classes)  # fmt: skip
    return FindingsCommitted(context.report_id, context.patient_id, context.instance_uid, card.key, card.clinical_use,
                             scores, outcome.output.code if outcome is not None else None,
                             outcome is None or outcome.indeterminate, context.lesion_id, routed)  # fmt: skip


async def append_findings(tx: TenantTransaction, event: FindingsCommitted) -> None:
    await tx.append_event(FINDINGS_COMMITTED, event.payload())


async def append_not_analysed(tx: TenantTransaction, context: ImageContext, kind: str, reason: str,
                              model: str = "") -> None:  # fmt: skip
    event = NotAnalysed(context.report_id, context.patient_id, context.instance_uid, kind, reason, model)
    await tx.append_event(NOT_ANALYSED, event.payload())
