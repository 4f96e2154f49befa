"""AI findings into FHIR (IHE AI Results in spirit; the HL7 AI Transparency IG for governance).

Per analysed image and model: a risk result per class and a predicted diagnosis above threshold
(``inference.findings``), focused on the lesion; the ABCD features; saliency maps as Binary + Media;
an AI Provenance (``inference.governance``); and the case updated (``inference.conclusion``).
Everything the model asserted carries ``meta.security`` AIAST. Every result has a deterministic
identifier, so the same image and model version produce one set of results however often the event
is delivered.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

from fhir_server.repository import Repository, Stored
from inference.abcd import AbcdFeatures
from inference.conclusion import update_case
from inference.findings import (
    FINDING_SYSTEM,
    UCUM,
    ImageContext,
    base_observation,
    diagnosis_observation,
    done_key,
    labelled,
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
from inference.model_card import ModelCard
from inference.pipeline import Prediction

__all__ = ["AIAST", "FINDING_SYSTEM", "Committed", "ImageContext", "done_key", "write_results"]
ABCD_SYSTEM = "urn:dermbridge:abcd"


async def _create(repo: Repository, resource: dict[str, Any], key: str) -> Stored:
    resource.setdefault("identifier", []).insert(0, {"system": FINDING_SYSTEM, "value": key})
    return await repo.create(resource, resource_type=resource["resourceType"], server_built=True)


def abcd_observation(
    context: ImageContext, card: ModelCard, device: Stored, features: AbcdFeatures, now: str
) -> dict[str, Any]:
    observation = base_observation(context, card, str(device.resource["id"]), now)
    observation["method"] = {"text": "Interpretable image analysis (lesion segmentation and ABCD features)"}
    observation["code"] = {"coding": [{"system": ABCD_SYSTEM, "code": "abcd"}], "text": "ABCD dermoscopic features"}

    def quantity(code: str, text: str, value: float, unit: str, ucum: str) -> dict[str, Any]:
        return {"code": {"coding": [{"system": ABCD_SYSTEM, "code": code}], "text": text},
                "valueQuantity": {"value": round(value, 4), "unit": unit, "system": UCUM, "code": ucum}}  # fmt: skip

    components = [
        quantity("asymmetry", "asymmetry (0 symmetric .. 1)", features.asymmetry, "1", "1"),
        quantity("border", "border irregularity (perimeter^2 / 4 pi area; 1: a smooth disc)",
                 features.border_irregularity, "1", "1"),
        {"code": {"coding": [{"system": ABCD_SYSTEM, "code": "colour-count"}], "text": "number of colours"},
         "valueInteger": len(features.colours)},
        {"code": {"coding": [{"system": ABCD_SYSTEM, "code": "colours"}], "text": "colours present"},
         "valueString": ", ".join(features.colours) or "none"},
    ]  # fmt: skip
    if features.diameter_mm is not None:
        components.append(quantity("diameter", "greatest diameter", features.diameter_mm, "mm", "mm"))
    else:
        components.append(quantity("diameter-px", "greatest diameter (no pixel spacing)", features.diameter_px,
                                   "pixels", "{pixels}"))  # fmt: skip
    observation["component"] = components
    return observation


async def write_saliency(
    repo: Repository, context: ImageContext, card: ModelCard, index: int, png: bytes, now: str
) -> Stored:
    key = result_key(context, card, f"saliency-{index}")
    finding = next(c for c in card.classes if c.index == index)
    binary = {"resourceType": "Binary", "contentType": "image/png", "data": base64.b64encode(png).decode()}
    stored_binary = await repo.create(binary, resource_type="Binary", server_built=True)
    media = {
        "resourceType": "Media",
        "status": "completed",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/media-type", "code": "image"}]},
        "subject": {"reference": f"Patient/{context.patient_id}"},
        "partOf": [{"reference": f"Media/{context.media_id}"}],
        "createdDateTime": now,
        "content": {"contentType": "image/png", "url": f"Binary/{stored_binary.resource['id']}",
                    "title": f"Saliency map: {finding.display} ({card.name} {card.version})"},
        "note": [{"text": f"Where the image drove {finding.display} (Grad-CAM or occlusion sensitivity)."}],
    }  # fmt: skip
    if context.body_site:
        media["bodySite"] = context.body_site
    return await _create(repo, labelled(media, card), key)  # AIAST; a demonstration model's map is tagged


async def write_results(
    repo: Repository,
    context: ImageContext,
    card: ModelCard,
    prediction: Prediction,
    features: AbcdFeatures | None,
    pngs: list[bytes] | None,
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
    maps = []
    for output, png in zip(card.classes, pngs or [], strict=False):
        maps.append(await write_saliency(repo, context, card, output.index, png, now))
    observations = []
    for output in card.classes:
        body = risk_observation(context, card, device_id, output, prediction.probabilities[output.index], now)
        observations.append(await _create(repo, body, result_key(context, card, f"class-{output.index}")))
    outcome = predicted_outcome(card, prediction.probabilities)
    if outcome is not None:
        risk_id = str(observations[card.classes.index(outcome.output)].resource["id"])
        body = diagnosis_observation(context, card, device_id, outcome, outcome.probability, now, risk_id)
        observations.append(await _create(repo, body, result_key(context, card, "diagnosis")))
    if features is not None:
        body = abcd_observation(context, card, device, features, now)
        observations.append(await _create(repo, body, result_key(context, card, "abcd")))
    targets = [f"Observation/{o.resource['id']}" for o in observations] + [f"Media/{m.resource['id']}" for m in maps]
    concluded = await update_case(repo, context, card, observations, now)
    if concluded is not None:  # the report version whose conclusion the AI wrote
        targets.append(f"DiagnosticReport/{concluded.resource['id']}/_history/{concluded.version.version}")
    provenance = ai_provenance(targets, now, device, server, model_card, context.images, context.consent_id)
    await repo.create(provenance, resource_type="Provenance", server_built=True)  # no identifier in R4
    return observations
