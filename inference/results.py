"""AI findings into FHIR (IHE AI Results in spirit; the HL7 AI Transparency IG for governance).

Per analysed image and model: a risk result per class and a predicted diagnosis above threshold
(``inference.findings``), focused on the lesion and compared with its earlier visits
(``inference.lesion_history``); an AI Provenance (``inference.governance``); and the
case updated (``inference.conclusion``). The explanations (the saliency map, the dermoscopy ABCD rule)
are written by ``inference.explanations``.
Everything the model asserted carries ``meta.security`` AIAST. Every result has a deterministic
identifier, so the same image and model version produce one set of results however often the event
is delivered.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fhir_server.repository import Repository, Stored
from inference.conclusion import update_case
from inference.findings import (
    FINDING_SYSTEM,
    ImageContext,
    diagnosis_observation,
    done_key,
    predicted_outcome,
    result_key,
    risk_observation,
)
from inference.governance import (
    AIAST,
    Committed,
    ai_provenance,
    ensure_device,
    ensure_model_card,
    ensure_server_device,
)
from inference.lesion_history import compared, earlier_results
from inference.model_card import ModelCard
from inference.pipeline import Prediction
from inference.tasks import complete_requeued

__all__ = ["AIAST", "FINDING_SYSTEM", "Committed", "ImageContext", "done_key", "write_results"]


async def _create(repo: Repository, resource: dict[str, Any], key: str) -> Stored:
    resource.setdefault("identifier", []).insert(0, {"system": FINDING_SYSTEM, "value": key})
    return await repo.create(resource, resource_type=resource["resourceType"], server_built=True)


async def write_results(
    repo: Repository,
    context: ImageContext,
    card: ModelCard,
    prediction: Prediction,
    server_version: str,
    committed: Committed | None = None,
    weights_sha256: str = "",
) -> list[Stored]:
    """Everything for one image, in the caller's transaction; returns the Observations (none when
    this image and model version have results already: they are written together, so the first
    one tells)."""
    if await repo.find("Observation", [("identifier", done_key(context, card))], 1):
        return []
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    committed = {} if committed is None else committed
    model_card = await ensure_model_card(repo, card, weights_sha256, committed)
    device = await ensure_device(repo, card, weights_sha256, model_card, committed)
    server = await ensure_server_device(repo, server_version, committed)
    device_id = str(device.resource["id"])
    observations = []
    earlier = await earlier_results(repo, context, card)
    for output in card.classes:
        body = risk_observation(context, card, device_id, output, prediction.probabilities[output.index], now)
        body = compared(body, earlier.get(f"probability-of-{output.code}"))
        observations.append(await _create(repo, body, result_key(context, card, f"class-{output.index}")))
    outcome = predicted_outcome(card, prediction.probabilities)
    if outcome is not None:
        risk_id = str(observations[card.classes.index(outcome.output)].resource["id"])
        body = diagnosis_observation(context, card, device_id, outcome, outcome.probability, now, risk_id)
        observations.append(await _create(repo, body, result_key(context, card, "diagnosis")))
    targets = [f"Observation/{o.resource['id']}" for o in observations]
    concluded = await update_case(repo, context, card, observations, now)
    await complete_requeued(repo, context, now)  # a review Task waiting on this analysis is done
    if concluded is not None:  # the report version whose conclusion the AI wrote
        targets.append(f"DiagnosticReport/{concluded.resource['id']}/_history/{concluded.version.version}")
    provenance = ai_provenance(targets, now, device, server, model_card, context.images, context.consent_id)
    await repo.create(provenance, resource_type="Provenance", server_built=True)  # no identifier in R4
    return observations
