"""The explanations beside an image's AI findings, in FHIR.

- The saliency map of the top finding: a ``Media`` (``partOf`` the image's Media, ``reasonCode`` the
  finding it explains, in words only: never a disease code) whose ``content.url`` is a ``Binary``
  holding the PNG. The Binary's
  ``securityContext`` is that Media (binary.html#security): it is sealed under the patient's data key,
  read under the patient's access rules, and erased with the patient. Found with
  ``Media?subject=Patient/<id>&modality=urn:dermbridge:media|saliency-map`` (the report's ``media``
  stays the case's images).
- The dermoscopy ABCD rule (``inference.abcd``): an Observation on the findings' skeleton (lesion,
  images, times, and the labels of the analysis it belongs to) whose ``device`` is the rule's own
  ``Device`` (rule-based software, not the network), with its own ``Provenance``. D is not assessed, so
  it reports A, B, C, the partial score and the TDS range, never a Total Dermoscopy Score.

Everything has a deterministic identifier: a redelivered event writes nothing new. They are written
after the findings, in a transaction of their own (``inference.worker``, findings first); the saliency
Media is that step's done-key (``explained_key``). Adding the ABCD result to the case makes a new report
version with the same conclusion: the findings' Provenance keeps naming the version the AI concluded.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from typing import Any

from fhir_server.repository import Repository, Stored
from inference.abcd import DermoscopyAbcd
from inference.conclusion import CLOSED, SIGNED_OFF
from inference.findings import FINDING_SYSTEM, UCUM, ImageContext, base_observation, demo_text, labelled
from inference.governance import AIAST, PROVENANCE_AGENT, SOFTWARE_SYSTEM, Committed, create_once
from inference.model_card import ModelCard, OutputClass

ABCD_SYSTEM = "urn:dermbridge:abcd"
SALIENCY_MAP = {"coding": [{"system": "urn:dermbridge:media", "code": "saliency-map", "display": "AI saliency map"}]}
ABCD_VERSION = "2.0.0"
ABCD_DEVICE_NAME = "DermBridge dermoscopy ABCD rule (Stolz)"
DATA_ABSENT = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
ABCD_NOTE = ("Not a Total Dermoscopy Score: D (differential structures) is not assessed. The TDS band is given "
             "only when every possible D leads to it. A scoring aid from rule-based software with no intended "
             "use of its own, not clinically validated: not a diagnosis.")  # fmt: skip
# The TDS band (Stolz's published cut-offs) named as a score band of a scoring aid, never as what the
# lesion is: the rule has no intended use of its own and is not validated here.
CATEGORY_BAND = {
    "benign": ("tds-below-4.75", "TDS below 4.75 for any D"),
    "suspicious": ("tds-4.75-to-5.45", "TDS 4.75 to 5.45 for any D"),
    "highly-suspicious": ("tds-above-5.45", "TDS above 5.45 for any D"),
}
BAND_TEXT = "Stolz TDS cut-off band (a dermoscopy scoring aid, published cut-offs 4.75 / 5.45; not validated here)"
SCORING_AID = "not a diagnosis: a dermoscopy scoring aid, not validated here"


def _key(context: ImageContext, part: str) -> str:
    return hashlib.sha256(f"{context.instance_uid}|{part}".encode()).hexdigest()[:32]


async def _found(repo: Repository, resource_type: str, key: str) -> Stored | None:
    found = await repo.find(resource_type, [("identifier", f"{FINDING_SYSTEM}|{key}")], 1)
    return found[0] if found else None


def explained_key(context: ImageContext, card: ModelCard) -> str:
    """The identifier of the saliency Media, written last in the explanations' transaction: once it
    exists, the explanations of this image and model are committed."""
    return f"{FINDING_SYSTEM}|{_saliency_key(context, card)}"


def _saliency_key(context: ImageContext, card: ModelCard) -> str:
    return _key(context, f"{card.key}|saliency")


# -- saliency -------------------------------------------------------------------------------------------
async def write_saliency(
    repo: Repository, context: ImageContext, card: ModelCard, finding: OutputClass, png: bytes, now: str
) -> Stored:
    """The saliency Media and its Binary (securityContext: the Media), in the caller's transaction."""
    key = _saliency_key(context, card)
    existing = await _found(repo, "Media", key)
    if existing is not None:
        return existing
    media_id, binary_id = str(uuid.uuid4()), str(uuid.uuid4())
    media: dict[str, Any] = {
        "resourceType": "Media",
        "id": media_id,
        "identifier": [{"system": FINDING_SYSTEM, "value": key}],
        "status": "completed",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/media-type", "code": "image"}]},
        "modality": SALIENCY_MAP,
        "subject": {"reference": f"Patient/{context.patient_id}"},
        "partOf": [{"reference": f"Media/{context.media_id}"}],
        # why the map exists: the finding it explains, in words (Media.reasonCode is why the image was
        # taken; a disease code here would read as a diagnosis, and a demonstration never writes one)
        "reasonCode": [{"text": f"Explains the AI finding '{demo_text(card, f'probability of {finding.display}')}' "
                                "(an explanation of a model score, not a diagnosis)"}],
        "createdDateTime": now,
        "content": {"contentType": "image/png", "url": f"Binary/{binary_id}",
                    "title": f"Saliency map: {finding.display} ({card.name} {card.version})"},
        "note": [{"text": f"Where the image, compared with plain skin, drove the top finding {finding.display} "
                          "(integrated gradients, or Grad-CAM when the model card names a layer)."}],
    }  # fmt: skip
    if context.body_site:
        media["bodySite"] = context.body_site
    stored = await repo.update(labelled(media, card), resource_type="Media", id=media_id, server_built=True)
    binary = {
        "resourceType": "Binary",
        "id": binary_id,
        "contentType": "image/png",
        "securityContext": {"reference": f"Media/{media_id}"},
        "data": base64.b64encode(png).decode(),
    }
    await repo.update(binary, resource_type="Binary", id=binary_id, server_built=True)
    return stored


# -- the dermoscopy ABCD rule ---------------------------------------------------------------------------
async def ensure_abcd_device(repo: Repository, committed: Committed) -> Stored:
    """The ABCD rule as a Device of its own: rule-based software, not the AI model."""
    device = {
        "resourceType": "Device",
        "status": "active",
        "deviceName": [{"name": ABCD_DEVICE_NAME, "type": "model-name"}],
        "type": {"text": "Rule-based image analysis software (no machine learning)"},
        "version": [{"value": ABCD_VERSION}],
        "note": [{"text": "Computes A (asymmetry axes 0-2), B (abrupt border segments 0-8) and C (colours 1-6) of "
                          "the dermoscopy ABCD rule from a segmented lesion. D (differential structures) is not "
                          "assessed, so no Total Dermoscopy Score is reported, only its possible range."}],
    }  # fmt: skip
    identifier = {"system": SOFTWARE_SYSTEM, "value": f"dermbridge-abcd@{ABCD_VERSION}"}
    return await create_once(repo, device, [identifier], committed)


def _component(code: str, text: str, **value: Any) -> dict[str, Any]:
    return {"code": {"coding": [{"system": ABCD_SYSTEM, "code": code}], "text": text}, **value}


def _number(value: float, unit: str = "1", ucum: str = "1") -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": ucum}


def abcd_components(abcd: DermoscopyAbcd) -> list[dict[str, Any]]:
    low, high = abcd.tds_range
    category = abcd.category
    components = [
        _component("A", "A: asymmetry, axes of asymmetry in contour or colour (0-2)", valueInteger=abcd.asymmetry),
        _component("B", "B: border segments with an abrupt cut-off (0-8)", valueInteger=abcd.border),
        _component("C", "C: number of colours (1-6)", valueInteger=abcd.colour_count),
        _component("colours", "colours present", valueString=", ".join(abcd.colours) or "none definite"),
        _component("D", "D: differential structures (1-5): not assessed by this software",
                   dataAbsentReason={"coding": [{"system": DATA_ABSENT, "code": "unsupported"}]}),
        _component("partial-score", "1.3 A + 0.1 B + 0.5 C (the TDS without D)",
                   valueQuantity=_number(abcd.partial_score)),
        _component("tds-range", "Total Dermoscopy Score possible for D from 1 to 5",
                   valueRange={"low": _number(low), "high": _number(high)}),
    ]  # fmt: skip
    if category is not None:
        code, band = CATEGORY_BAND[category]
        concept = {"coding": [{"system": ABCD_SYSTEM, "code": code}], "text": f"{band} ({SCORING_AID})"}
        components.append(_component("tds-band", BAND_TEXT, valueCodeableConcept=concept))
    else:
        unknown = {"coding": [{"system": DATA_ABSENT, "code": "unknown"}]}
        components.append(_component("tds-band", f"{BAND_TEXT}: depends on D, which is not assessed",
                                     dataAbsentReason=unknown))  # fmt: skip
    if abcd.diameter_mm is not None:
        components.append(_component("diameter", "greatest diameter", valueQuantity=_number(
            round(abcd.diameter_mm, 2), "mm", "mm")))  # fmt: skip
    else:
        components.append(_component("diameter-px", "greatest diameter (no pixel spacing)", valueQuantity=_number(
            round(abcd.diameter_px, 1), "pixels", "{pixels}")))  # fmt: skip
    return components


async def write_abcd(
    repo: Repository, context: ImageContext, card: ModelCard, abcd: DermoscopyAbcd, now: str, committed: Committed
) -> Stored:
    """The ABCD Observation, its Provenance, and its place in the case report."""
    key = _key(context, f"abcd@{ABCD_VERSION}")
    existing = await _found(repo, "Observation", key)
    if existing is not None:
        return existing
    device = await ensure_abcd_device(repo, committed)
    observation = base_observation(context, card, str(device.resource["id"]), now)  # the findings' skeleton
    observation.update({
        "identifier": [{"system": FINDING_SYSTEM, "value": key}],
        "device": {"reference": f"Device/{device.resource['id']}", "display": ABCD_DEVICE_NAME},
        "code": {"coding": [{"system": ABCD_SYSTEM, "code": "abc-partial"}],
                 "text": demo_text(card, "Dermoscopy ABCD rule (Stolz): A, B and C; D not assessed")},
        "method": {"text": "Rule-based image analysis: field of view masked, lesion segmented, ABCD rule (Stolz 1994)"},
        "component": abcd_components(abcd),
    })  # fmt: skip
    observation.setdefault("note", []).append({"text": ABCD_NOTE})
    stored = await repo.create(observation, resource_type="Observation", server_built=True)
    provenance = {
        "resourceType": "Provenance",
        "target": [{"reference": f"Observation/{stored.resource['id']}"}],
        "recorded": now,
        "activity": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation",
                                 "code": "CREATE"}], "text": "Rule-based dermoscopy ABCD analysis"},
        "agent": [{"type": {"coding": [{"system": PROVENANCE_AGENT, "code": "author"}]},
                   "who": {"reference": f"Device/{device.resource['id']}"}}],
        "entity": [{"role": "source", "what": {"reference": image}} for image in context.images],
        "reason": [{"coding": [AIAST]}],  # labelled like the model's results it sits beside
    }  # fmt: skip
    if context.consent_id:
        provenance["policy"] = [f"Consent/{context.consent_id}"]  # the Consent that permitted the analysis
    await repo.create(provenance, resource_type="Provenance", server_built=True)
    await attach_to_case(repo, context, stored)
    return stored


async def attach_to_case(repo: Repository, context: ImageContext, result: Stored) -> None:
    """List an explanation among the case report's results; a signed-off report is never changed."""
    current = await repo.current("DiagnosticReport", context.report_id)
    if current is None or current.get("status") in (*SIGNED_OFF, *CLOSED):
        return
    reference = {"reference": f"Observation/{result.resource['id']}"}
    if reference not in current.get("result", []):
        report = {**current, "result": [*current.get("result", []), reference]}
        await repo.update(report, resource_type="DiagnosticReport", id=context.report_id, server_built=True)
