"""AI findings into FHIR (IHE AI Results in spirit; HL7 AI Transparency on FHIR where it fits).

Per analysed image: one Observation per output class of the model (the class, its probability,
its interpretation against the card's threshold), a Provenance, and the case DiagnosticReport updated.
The explanations (saliency map, dermoscopy ABCD rule) are written by ``inference.explanations``. Everything the model
asserted carries ``meta.security`` AIAST. Every resource has a deterministic identifier, so the same
image and model version produce one set of results however often the event is delivered.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fhir_server.repository import Repository, Stored
from inference.model_card import SNOMED, ModelCard
from inference.pipeline import Prediction

AIAST = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "AIAST",
         "display": "Artificial Intelligence asserted"}  # fmt: skip
FINDING_SYSTEM = "urn:dermbridge:ai-result"
MODEL_SYSTEM = "urn:dermbridge:model"
SOFTWARE_SYSTEM = "urn:dermbridge:software"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
IMAGING = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "imaging"}]}
METHOD = {"coding": [{"system": "urn:dermbridge:method", "code": "ai-analysis", "display": "AI analysis"}],
          "text": "AI analysis"}  # fmt: skip
FINAL_STATES = ("final", "amended", "corrected", "appended", "cancelled", "entered-in-error")
PROVENANCE_AGENT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
UCUM = "http://unitsofmeasure.org"


@dataclass(frozen=True, slots=True)
class ImageContext:
    """The image analysed and where it sits, from the ``imaging.instance-stored`` event."""

    instance_uid: str
    patient_id: str
    media_id: str
    imaging_study_id: str
    report_id: str
    body_site: dict[str, Any] | None = None


def done_key(context: ImageContext, card: ModelCard) -> str:
    """The identifier of the first result written: all results exist once it does (one transaction)."""
    return f"{FINDING_SYSTEM}|{result_key(context, card, 'class-0')}"


def result_key(context: ImageContext, card: ModelCard, part: str) -> str:
    digest = hashlib.sha256(f"{context.instance_uid}|{card.key}|{part}".encode()).hexdigest()[:32]
    return digest


async def _one(repo: Repository, resource_type: str, identifier: str) -> Stored | None:
    found = await repo.find(resource_type, [("identifier", identifier)], 2)
    return found[0] if found else None


async def _create(repo: Repository, resource: dict[str, Any], identifier: dict[str, str]) -> Stored:
    resource.setdefault("identifier", []).insert(0, identifier)
    return await repo.create(resource, resource_type=resource["resourceType"], server_built=True)


Committed = dict[tuple[str, str], Stored]  # (tenant, identifier) -> a resource known to be committed


async def _create_once(
    repo: Repository, resource: dict[str, Any], identifier: dict[str, str], committed: Committed
) -> Stored:
    """Create unless a resource with ``identifier`` exists (the Devices: once per tenant)."""
    token = f"{identifier['system']}|{identifier['value']}"
    known = committed.get((repo.tenant, token))
    if known is not None:
        return known
    existing = await _one(repo, resource["resourceType"], token)
    if existing is not None:
        committed[(repo.tenant, token)] = existing  # found, so committed: safe to remember
        return existing
    return await _create(repo, resource, identifier)


async def ensure_device(repo: Repository, card: ModelCard, committed: Committed) -> Stored:
    """The model as a FHIR Device (AI software), created once per tenant."""
    device = {
        "resourceType": "Device",
        "status": "active",
        "deviceName": [{"name": card.name, "type": "model-name"}, {"name": card.id, "type": "other"}],
        "type": {"text": "AI software (machine-learning model)"},
        "version": [{"value": card.version}],
        "note": [{"text": f"Intended use: {card.intended_use}"}]
        + [{"text": f"Limitation: {limit}"} for limit in card.limitations],
        "property": [
            {"type": {"text": "output class"}, "valueCode": [{"coding": [{"system": SNOMED, "code": c.code,
             "display": c.display}]}]} for c in card.classes
        ],
    }  # fmt: skip
    return await _create_once(repo, device, {"system": MODEL_SYSTEM, "value": card.key}, committed)


async def ensure_server_device(repo: Repository, version: str, committed: Committed) -> Stored:
    device = {
        "resourceType": "Device",
        "status": "active",
        "deviceName": [{"name": "DermBridge", "type": "manufacturer-name"}],
        "type": {"text": "Clinical data server (DermBridge)"},
        "version": [{"value": version}],
    }
    identifier = {"system": SOFTWARE_SYSTEM, "value": f"dermbridge@{version}"}
    return await _create_once(repo, device, identifier, committed)


def _coding(card: ModelCard, index: int) -> dict[str, Any]:
    found = next(c for c in card.classes if c.index == index)
    return {"coding": [{"system": SNOMED, "code": found.code, "display": found.display}], "text": found.display}


def _common(context: ImageContext, device: Stored, now: str) -> dict[str, Any]:
    derived = [{"reference": f"ImagingStudy/{context.imaging_study_id}"}, {"reference": f"Media/{context.media_id}"}]
    body: dict[str, Any] = {
        "resourceType": "Observation",
        "meta": {"security": [AIAST]},
        "status": "preliminary",
        "category": [IMAGING],
        "subject": {"reference": f"Patient/{context.patient_id}"},
        "focus": [{"reference": f"Media/{context.media_id}"}],
        "effectiveDateTime": now,
        "issued": now,
        "device": {"reference": f"Device/{device.resource['id']}"},
        "method": METHOD,
        "derivedFrom": derived,
    }
    if context.body_site:
        body["bodySite"] = context.body_site
    return body


def finding_observation(
    context: ImageContext, card: ModelCard, device: Stored, prediction: Prediction, index: int, now: str
) -> dict[str, Any]:
    output = next(c for c in card.classes if c.index == index)
    probability = prediction.probabilities[index]
    positive = probability >= output.threshold
    observation = _common(context, device, now)
    observation.update(
        {
            "code": _coding(card, index),
            "valueCodeableConcept": _coding(card, index),
            "interpretation": [{"coding": [{"system": INTERPRETATION, "code": "POS" if positive else "NEG",
                                            "display": "Positive" if positive else "Negative"}]}],
            "component": [{
                "code": {"coding": [{"system": FINDING_SYSTEM, "code": "probability"}], "text": "probability"},
                "valueQuantity": {"value": round(probability, 6), "unit": "probability", "system": UCUM, "code": "1"},
            }, {
                "code": {"coding": [{"system": FINDING_SYSTEM, "code": "threshold"}], "text": "decision threshold"},
                "valueQuantity": {"value": output.threshold, "unit": "probability", "system": UCUM, "code": "1"},
            }],
            "note": [{"text": f"{card.name} {card.version}: {card.intended_use}"}],
        }
    )  # fmt: skip
    return observation


async def write_results(
    repo: Repository,
    context: ImageContext,
    card: ModelCard,
    prediction: Prediction,
    server_version: str,
    committed: Committed | None = None,
) -> list[Stored]:
    """Everything for one image, in the caller's transaction; returns the Observations (none when
    this image and model version have results already: they are written together, so the first
    one tells)."""
    if await _one(repo, "Observation", done_key(context, card)):
        return []
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    committed = {} if committed is None else committed
    device = await ensure_device(repo, card, committed)
    server = await ensure_server_device(repo, server_version, committed)
    observations = []
    for output in card.classes:
        body = finding_observation(context, card, device, prediction, output.index, now)
        key = {"system": FINDING_SYSTEM, "value": result_key(context, card, f"class-{output.index}")}
        observations.append(await _create(repo, body, key))
    targets = [{"reference": f"Observation/{o.resource['id']}"} for o in observations]
    provenance = {
        "resourceType": "Provenance",
        "meta": {"security": [AIAST]},
        "target": targets,
        "recorded": now,
        "activity": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation",
                                 "code": "CREATE"}], "text": "AI analysis"},
        "agent": [
            {"type": {"coding": [{"system": PROVENANCE_AGENT, "code": "author"}]},
             "who": {"reference": f"Device/{device.resource['id']}"}},
            {"type": {"coding": [{"system": PROVENANCE_AGENT, "code": "custodian"}]},
             "who": {"reference": f"Device/{server.resource['id']}"}},
        ],
        "entity": [{"role": "source", "what": {"reference": f"Media/{context.media_id}"}},
                   {"role": "source", "what": {"reference": f"ImagingStudy/{context.imaging_study_id}"}}],
    }  # fmt: skip
    await repo.create(provenance, resource_type="Provenance", server_built=True)  # no identifier in R4
    await update_case(repo, context, card, observations, prediction)
    return observations


async def update_case(
    repo: Repository, context: ImageContext, card: ModelCard, observations: list[Stored], prediction: Prediction
) -> None:
    """Add the results to the case; a clinician's final (or later) report is never changed."""
    current = await repo.current("DiagnosticReport", context.report_id)
    if current is None or current.get("status") in FINAL_STATES:
        return
    report = dict(current)
    results = report.setdefault("result", [])
    known = {r.get("reference") for r in results}
    for stored in observations:
        reference = f"Observation/{stored.resource['id']}"
        if reference not in known:
            results.append({"reference": reference})
    report["status"] = "preliminary"
    report["conclusionCode"] = [_coding(card, prediction.top)]
    report["conclusion"] = (
        f"AI (preliminary, {card.name} {card.version}): {_coding(card, prediction.top)['text']}, "
        f"probability {prediction.probabilities[prediction.top]:.2f}. Awaiting clinician review."
    )
    if report != current:
        await repo.update(report, resource_type="DiagnosticReport", id=context.report_id, server_built=True)
