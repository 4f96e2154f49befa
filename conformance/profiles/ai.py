"""Profiles of the AI's identity and the record of its use (``inference.governance``), aligned with the
HL7 AI Transparency IG (hl7.org/fhir/uv/aitransparency, FHIR R4: ``input/fsh/AIDevice.fsh``,
``AIProvenance.fsh``): DermBridge's constrain the IG's AI-Device and AI-Provenance further (a model card,
the weights' digest, the images as inputs), and say so with the ``compliesWithProfile`` extension."""

from __future__ import annotations

from typing import Any

from conformance.profiles.builder import element, invariant, profile, reference, sliced
from fhir_server import declared_profiles as urls
from inference.governance import (
    AI_DEVICE_PROFILE,
    AI_DEVICE_TYPES,
    AI_KIND,
    AI_PROVENANCE_PROFILE,
    AIAST,
    MODEL_CARD_EXTENSION,
    MODEL_SYSTEM,
    WEIGHTS_SYSTEM,
)

COMPLIES_WITH = "http://hl7.org/fhir/StructureDefinition/structuredefinition-compliesWithProfile"
AI_TYPE = {"coding": [{"system": AI_DEVICE_TYPES, "code": "Artificial-Intelligence"}]}


def _complies(url: str) -> dict[str, Any]:
    return {"extension": [{"url": COMPLIES_WITH, "valueCanonical": url}]}


def ai_device() -> dict[str, Any]:
    return profile(
        urls.AI_DEVICE,
        "Device",
        "DermBridge AI model",
        "A model DermBridge runs, as an AI Transparency IG AI-Device: type Artificial-Intelligence, its kinds "
        "(AIKind), its model card (modelCardDescription), identified by its id and version and by the SHA-256 of "
        "its weights (other weights are another Device).",
        [
            sliced("Device.extension", "value", "url", min=2),
            element("Device.extension:aiKind", min=1, type=[{"code": "Extension", "profile": [AI_KIND]}]),
            element("Device.extension:aiKind.url", fixedUri=AI_KIND),
            element("Device.extension:aiKind.value[x]", min=1, type=[{"code": "CodeableConcept"}]),
            element("Device.extension:modelCard", min=1, max="1",
                    type=[{"code": "Extension", "profile": [MODEL_CARD_EXTENSION]}]),
            element("Device.extension:modelCard.url", fixedUri=MODEL_CARD_EXTENSION),
            element("Device.extension:modelCard.value[x]", min=1, type=reference("DocumentReference")),
            sliced("Device.identifier", "value", "system", min=2),
            element("Device.identifier:weights", short="SHA-256 of the model's weights", min=1, max="1"),
            element("Device.identifier:weights.system", min=1, fixedUri=WEIGHTS_SYSTEM),
            element("Device.identifier:weights.value", min=1),
            element("Device.identifier:model", short="The model's id and version", min=1, max="1"),
            element("Device.identifier:model.system", min=1, fixedUri=MODEL_SYSTEM),
            element("Device.identifier:model.value", min=1),
            element("Device.type", min=1, patternCodeableConcept=AI_TYPE),
            element("Device.deviceName", min=1),
            element("Device.version", min=1),
        ],
        **_complies(AI_DEVICE_PROFILE),
    )  # fmt: skip


def ai_provenance() -> dict[str, Any]:
    return profile(
        urls.AI_PROVENANCE,
        "Provenance",
        "DermBridge AI analysis provenance",
        "One AI analysis as an AI Transparency IG AI-Provenance: the findings it wrote (target), reason AIAST, "
        "the model (an AI Device, role Artificial-Intelligence) as author, the images and the model card as "
        "inputs (derivation), and the Consent that permitted it (policy).",
        [
            element("Provenance.target", min=1),
            sliced("Provenance.reason", "pattern", "$this", min=1),
            element("Provenance.reason:aiAsserted", min=1, max="1",
                    patternCodeableConcept={"coding": [{"system": AIAST["system"], "code": AIAST["code"]}]}),
            sliced("Provenance.agent", "pattern", "role"),
            element("Provenance.agent:ai", min=1, max="*"),
            element("Provenance.agent:ai.type", min=1),
            element("Provenance.agent:ai.role", min=1, max="1", patternCodeableConcept=AI_TYPE),
            element("Provenance.agent:ai.who", type=reference("Device")),
            element("Provenance.entity", min=1),
            element("Provenance.entity.role", fixedCode="derivation"),
        ],
        constraints=(
            invariant("dbr-prov-1", "The model card the analysis rests on is one of its inputs",
                      "entity.where(what.reference.startsWith('DocumentReference/')).exists()"),
        ),
        **_complies(AI_PROVENANCE_PROFILE),
    )  # fmt: skip
