"""Who said it and on what grounds, per the HL7 AI Transparency IG (hl7.org/fhir/uv/aitransparency,
FHIR R4): the model as an AI ``Device``, its card as an AI Model-Card ``DocumentReference``, and an AI
``Provenance`` for every analysis.

- Device (profile AI-Device): ``type`` = AIdeviceTypeCS#Artificial-Intelligence, the AIKind
  extension (deep learning, medical imaging data, medical image analysis) and the
  modelCardDescription extension pointing at the card. Identified by the model id, its version
  **and the SHA-256 of its weights**: other weights under the same id and version are another Device.
- DocumentReference (profile AI-ModelCard): type AIinputsCS#AIModelCard, category Markdown format,
  the card as Markdown (and the card's own JSON beside it), readable by any EHR.
- Provenance (profile AI-Provenance): ``reason`` AIAST, the AI agent with ``role``
  Artificial-Intelligence, entities the images and the model card (``derivation``), and ``policy`` the
  Consent that permitted the analysis.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from fhir_server.declared_profiles import AI_DEVICE, AI_PROVENANCE
from fhir_server.repository import Repository, Stored
from inference.model_card import SNOMED, ModelCard

IG = "http://hl7.org/fhir/uv/aitransparency"
AI_DEVICE_PROFILE = f"{IG}/StructureDefinition/AI-Device"
AI_MODEL_CARD_PROFILE = f"{IG}/StructureDefinition/AI-ModelCard"
AI_PROVENANCE_PROFILE = f"{IG}/StructureDefinition/AI-Provenance"
AI_KIND = f"{IG}/StructureDefinition/aitransparency.AIKind"
MODEL_CARD_EXTENSION = f"{IG}/StructureDefinition/aitransparency.modelCardDescription"
AI_DEVICE_TYPES = f"{IG}/CodeSystem/AIdeviceTypeCS"
AI_INPUTS = f"{IG}/CodeSystem/AIinputsCS"
AIAST = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "AIAST",
         "display": "Artificial Intelligence asserted"}  # fmt: skip
AI_ROLE = {"coding": [{"system": AI_DEVICE_TYPES, "code": "Artificial-Intelligence",
                       "display": "All kinds of Artificial Intelligence"}]}  # fmt: skip
PROVENANCE_AGENT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
MODEL_SYSTEM = "urn:dermbridge:model"
WEIGHTS_SYSTEM = "urn:dermbridge:model-weights-sha256"
MODEL_CARD_SYSTEM = "urn:dermbridge:model-card-sha256"
SOFTWARE_SYSTEM = "urn:dermbridge:software"
AI_KINDS = (("Deep-Learning-Models", "Deep Learning Models"),
            ("AI-for-Medical-Imaging-Data", "AI for Medical Imaging Data"),
            ("Medical-Image-Analysis", "Medical Image Analysis"))  # fmt: skip

RENDERED = {"id", "version", "name", "intended_use", "input", "classes", "limitations", "performance", "training",
            "clinical_use", "contraindications", "fitzpatrick_coverage", "risk_hierarchy",
            "saliency_layer", "calibrated", "regulatory_clearance", "indeterminate_margin"}  # fmt: skip
Committed = dict[tuple[str, str], Stored]  # (tenant, identifier) -> a resource known to be committed


async def create_once(
    repo: Repository, resource: dict[str, Any], identifiers: list[dict[str, str]], committed: Committed
) -> Stored:
    """Create unless a resource with the first of ``identifiers`` exists (Devices, model cards)."""
    token = f"{identifiers[0]['system']}|{identifiers[0]['value']}"
    known = committed.get((repo.tenant, token))
    if known is not None:
        return known
    found = await repo.find(resource["resourceType"], [("identifier", token)], 1)
    if found:
        committed[(repo.tenant, token)] = found[0]  # found, so committed: safe to remember
        return found[0]
    resource["identifier"] = identifiers
    return await repo.create(resource, resource_type=resource["resourceType"], server_built=True)


def card_markdown(card: ModelCard, weights_sha256: str) -> str:
    """The model card for people: what it is for, what it must not be used for, what it answers,
    how well (and for whom) it is known to work."""
    if not card.clinical_use:
        use = ("**NOT FOR CLINICAL USE.** A demonstration model trained on synthetic images; it has no clinical "
               "performance metrics and its outputs are not diagnoses.")  # fmt: skip
    elif card.regulatory_clearance:
        use = f"Regulatory clearance: {card.regulatory_clearance}."
    else:
        use = "Declared for clinical use by its provider; no regulatory clearance recorded on this card."
    scores = "Scores are calibrated probabilities (per the provider)." if card.calibrated else (
        "Scores ('probability') are uncalibrated softmax scores: compare them with the thresholds only.")  # fmt: skip
    lines = [f"# {card.name}", "", f"- id: `{card.id}`, version `{card.version}`",
             f"- weights SHA-256: `{weights_sha256 or 'unknown'}`", f"- {use}", f"- {scores}", "",
             "## Intended use", "", card.intended_use, "", "## Contraindications", ""]  # fmt: skip
    lines += [f"- {c}" for c in card.contraindications] or ["- none declared"]
    spec = card.input
    lines += ["", "## Accepted inputs", "",
              f"- {spec.colour_space} images, resized to {spec.width} x {spec.height} pixels"]  # fmt: skip
    lines += [
        f"- {key}: {value}"
        for key, value in sorted(card.to_dict().items())
        if key not in RENDERED and value not in (None, "", {}, [], ())
    ]  # e.g. the admission rules
    lines += ["", "## Output classes (SNOMED CT)", "", "| index | code | display | threshold | risk tier |",
              "|---|---|---|---|---|"]  # fmt: skip
    lines += [f"| {c.index} | {c.code} | {c.display} | {c.threshold} | {c.risk_tier} |" for c in card.classes]
    lines += ["", f"Case conclusion risk hierarchy (highest first): {' > '.join(card.risk_hierarchy)}", "",
              f"No benign call while a malignant or pre-malignant class scores within {card.indeterminate_margin:g} "
              "under its threshold (the result is then equivocal).", "",
              "## Performance by subgroup", ""]  # fmt: skip
    lines += [f"- {_metric(p)}" for p in card.performance] or ["- no metrics"]
    lines += ["", "## Skin types (Fitzpatrick)", "", card.fitzpatrick_coverage or "not declared", "",
              "## Limitations", ""]  # fmt: skip
    lines += [f"- {limit}" for limit in card.limitations] or ["- none declared"]
    if card.training:
        lines += ["", "## Training", "", card.training]
    return "\n".join(lines) + "\n"


def _metric(entry: dict[str, Any]) -> str:
    value = entry.get("value")
    shown = "unknown" if value is None else str(value)
    ci = entry.get("ci95")
    if isinstance(ci, list | tuple) and len(ci) == 2:
        shown += f" (95% CI {ci[0]}-{ci[1]})"
    extra = f", n={entry['n']}" if "n" in entry else ""
    note = f" ({entry['note']})" if entry.get("note") else ""
    return f"{entry.get('subgroup', 'all')}: {entry.get('metric', 'metric')} {shown}{extra}{note}"


async def ensure_model_card(repo: Repository, card: ModelCard, weights_sha256: str, committed: Committed) -> Stored:
    """The card as an AI Model-Card DocumentReference, once per card content."""
    markdown = card_markdown(card, weights_sha256)
    as_json = json.dumps(card.to_dict(), sort_keys=True)
    digest = hashlib.sha256(f"{as_json}|{weights_sha256}".encode()).hexdigest()
    document = {
        "resourceType": "DocumentReference",
        "meta": {"profile": [AI_MODEL_CARD_PROFILE]},
        "status": "current",
        "type": {"coding": [{"system": AI_INPUTS, "code": "AIModelCard", "display": "AI Model-Card"}]},
        "category": [{"coding": [{"system": AI_INPUTS, "code": "AIModelCardMarkdownFormat",
                                  "display": "Markdown Format"}]}],
        "description": markdown,
        "content": [
            {"attachment": {"contentType": "text/markdown", "data": base64.b64encode(markdown.encode()).decode(),
                            "title": f"Model card: {card.name} {card.version}"}},
            {"attachment": {"contentType": "application/json", "data": base64.b64encode(as_json.encode()).decode(),
                            "title": "Model card (DermBridge JSON)"}},
        ],
    }  # fmt: skip
    identifiers = [{"system": MODEL_CARD_SYSTEM, "value": digest}, {"system": MODEL_SYSTEM, "value": card.key}]
    return await create_once(repo, document, identifiers, committed)


async def ensure_device(
    repo: Repository, card: ModelCard, weights_sha256: str, model_card: Stored, committed: Committed
) -> Stored:
    """The model as an AI Device, once per weights (id and version alone do not identify a model)."""
    kinds = [{"url": AI_KIND, "valueCodeableConcept": {"coding": [{"system": AI_DEVICE_TYPES, "code": code,
              "display": display}]}} for code, display in AI_KINDS]  # fmt: skip
    notes = [f"Intended use: {card.intended_use}"] + [f"Limitation: {limit}" for limit in card.limitations]
    if not card.clinical_use:
        notes.insert(0, "NOT FOR CLINICAL USE: demonstration model (synthetic training data, no clinical metrics).")
    device = {
        "resourceType": "Device",
        "meta": {"profile": [AI_DEVICE_PROFILE, AI_DEVICE]},
        "extension": [*kinds, {"url": MODEL_CARD_EXTENSION,
                               "valueReference": {"reference": f"DocumentReference/{model_card.resource['id']}"}}],
        "status": "active",
        "deviceName": [{"name": card.name, "type": "model-name"}, {"name": card.id, "type": "other"}],
        "type": AI_ROLE,
        "version": [{"value": card.version}],
        "note": [{"text": text} for text in notes],
        "property": [
            {"type": {"text": "output class"}, "valueCode": [{"coding": [{"system": SNOMED, "code": c.code,
             "display": c.display}]}]} for c in card.classes
        ],
    }  # fmt: skip
    identity = weights_sha256 or hashlib.sha256(card.key.encode()).hexdigest()
    identifiers = [{"system": WEIGHTS_SYSTEM, "value": identity}, {"system": MODEL_SYSTEM, "value": card.key}]
    return await create_once(repo, device, identifiers, committed)


async def ensure_server_device(repo: Repository, version: str, committed: Committed) -> Stored:
    device = {
        "resourceType": "Device",
        "status": "active",
        "deviceName": [{"name": "DermBridge", "type": "manufacturer-name"}],
        "type": {"text": "Clinical data server (DermBridge)"},
        "version": [{"value": version}],
    }
    return await create_once(repo, device, [{"system": SOFTWARE_SYSTEM, "value": f"dermbridge@{version}"}], committed)


def ai_provenance(
    targets: list[str], recorded: str, device: Stored, server: Stored, model_card: Stored, images: list[str],
    consent_id: str | None,
) -> dict[str, Any]:  # fmt: skip
    """One analysis as an AI Provenance: what it wrote, by which AI, from which images and card, under
    which Consent."""
    provenance: dict[str, Any] = {
        "resourceType": "Provenance",
        # written by the server about the AI: not AI-asserted
        "meta": {"profile": [AI_PROVENANCE_PROFILE, AI_PROVENANCE]},
        "target": [{"reference": t} for t in targets],
        "recorded": recorded,
        "reason": [{"coding": [AIAST]}],
        "activity": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation",
                                 "code": "CREATE", "display": "create"}], "text": "AI analysis"},
        "agent": [
            {"type": {"coding": [{"system": PROVENANCE_AGENT, "code": "author", "display": "Author"}]},
             "role": [AI_ROLE], "who": {"reference": f"Device/{device.resource['id']}"}},
            {"type": {"coding": [{"system": PROVENANCE_AGENT, "code": "custodian", "display": "Custodian"}]},
             "who": {"reference": f"Device/{server.resource['id']}"}},
        ],
        "entity": [{"role": "derivation", "what": {"reference": image}} for image in images]
        + [{"role": "derivation", "what": {"reference": f"DocumentReference/{model_card.resource['id']}"}}],
    }  # fmt: skip
    if consent_id:
        provenance["policy"] = [f"Consent/{consent_id}"]
    return provenance
