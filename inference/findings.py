"""Per lesion and model run, what the model said (observation.html, R4):

- one **risk result** per class of the model card: an Observation whose ``code`` is what was assessed
  ("probability of <class>", a DermBridge code naming the class's SNOMED CT concept) and whose
  ``valueQuantity`` is the probability (UCUM ``1``; beyond 0.001 / 0.999 written with ``comparator``
  "<" / ">", never 0.0 or 1.0), with the card's decision threshold and the class's risk tier as
  components. The disease is never a value here, so ``value-concept=<disease>`` finds no negative;
  ``interpretation`` (v3-ObservationInterpretation), for malignant and pre-malignant classes only, says
  POS at or above the threshold, IND in the card's indeterminate band just under it, NEG otherwise: a
  benign class's score has none (an EHR highlights POS as abnormal);
- at most one **predicted diagnosis** (``predicted_outcome``): among the classes at or above their own
  thresholds, the highest risk tier, then the highest probability. A benign call is withheld while a
  malignant or pre-malignant class lies within the card's ``indeterminate_margin`` under its threshold:
  the value is then SNOMED CT 42425007 |Equivocal (qualifier value)| ("a value very close to a
  cut-off"; 82334004 |Indeterminate| means uninterpretable). Code SNOMED CT 439401001
  |Diagnosis (observable entity)|, the probability and risk tier as components.

Both: ``focus`` the lesion (BodyStructure), ``derivedFrom`` the images (ImagingStudy, Media; never
a saliency map), ``effectiveDateTime`` when the image was taken, ``issued`` when it was analysed,
``device`` the model (named in ``device.display`` and ``method.text``), ``meta.security`` AIAST.
A demonstration model (card ``clinical_use: false``) never writes a SNOMED CT disease concept: its
diagnosis value is text only and every ``code.text`` starts with DEMONSTRATION; its results are
tagged and noted as such. Unless the card declares ``calibrated``, a note says the "probability" is
an uncalibrated softmax score.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fhir_server.declared_profiles import AI_PREDICTED_DIAGNOSIS, AI_RISK_RESULT, declare
from inference.governance import AIAST
from inference.model_card import INDETERMINATE, SNOMED, ModelCard, OutputClass

FINDING_SYSTEM = "urn:dermbridge:ai-result"
RISK_SYSTEM = "urn:dermbridge:ai-risk"
RISK_TIER_SYSTEM = "urn:dermbridge:risk-tier"
DIAGNOSIS = {"system": SNOMED, "code": "439401001", "display": "Diagnosis"}
DIAGNOSIS_TOKEN = f"{SNOMED}|439401001"
UCUM = "http://unitsofmeasure.org"
IMAGING = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "imaging",
                       "display": "Imaging"}]}  # fmt: skip
METHOD = {"system": "urn:dermbridge:method", "code": "ai-analysis", "display": "AI analysis"}
EQUIVOCAL = {"system": SNOMED, "code": "42425007", "display": "Equivocal"}
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
POSITIVE = {"system": INTERPRETATION, "code": "POS", "display": "Positive"}
NEGATIVE = {"system": INTERPRETATION, "code": "NEG", "display": "Negative"}
INDETERMINATE_READING = {"system": INTERPRETATION, "code": "IND", "display": "Indeterminate"}
CLASS_TIER = "class risk tier (model card): the tier of the class assessed, not a finding"
UNCALIBRATED_NOTE = ("'probability' is the model's softmax score, not a calibrated probability of disease: "
                     "compare it with the decision threshold only.")  # fmt: skip
SCORE_BOUNDS = (0.001, 0.999)  # a score outside is written as "< 0.001" / "> 0.999" (Quantity.comparator)
DEMO_TAG = {"system": "urn:dermbridge:ai-use", "code": "demonstration",
            "display": "Demonstration model output: not for clinical use"}  # fmt: skip
DEMO_NOTE = ("DEMONSTRATION model output (trained on synthetic images, no clinical validation): "
             "not for clinical use and not a diagnosis.")  # fmt: skip


@dataclass(frozen=True, slots=True)
class ImageContext:
    """The image analysed and where it sits, from the ``imaging.instance-stored`` event."""

    instance_uid: str
    patient_id: str
    media_id: str
    imaging_study_id: str
    report_id: str
    body_site: dict[str, Any] | None = None
    lesion_id: str = ""  # the BodyStructure the image shows ("" for events from before lesions)
    acquired: str | None = None  # when the image was taken (the Media's createdDateTime)
    consent_id: str | None = None  # the Consent that permitted the analysis

    @property
    def images(self) -> list[str]:
        return [f"ImagingStudy/{self.imaging_study_id}", f"Media/{self.media_id}"]

    @property
    def focus(self) -> str:
        return f"BodyStructure/{self.lesion_id}" if self.lesion_id else f"Media/{self.media_id}"


BODY_SITE_EXTENSION = "http://hl7.org/fhir/StructureDefinition/bodySite"  # R4: Reference(BodyStructure)


def lesion_site(lesion: dict[str, Any] | None, fallback: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """An Observation's or Media's ``bodySite`` for the lesion: its location's coding, the location and its
    qualifiers (laterality, modifiers) in the text, and the R4 ``bodySite`` extension referring to the
    BodyStructure (extension-bodysite.html), since a CodeableConcept's codings cannot carry laterality."""
    if lesion is None or "id" not in lesion:
        return fallback
    location = lesion.get("location") or fallback or {}
    words = [location.get("text") or "site not recorded"]
    words += [q.get("text", "") for q in lesion.get("locationQualifier", [])]
    site: dict[str, Any] = {"text": ", ".join(w for w in words if w)}
    if location.get("coding"):
        site["coding"] = location["coding"]
    site["extension"] = [{"url": BODY_SITE_EXTENSION, "valueReference": {"reference": f"BodyStructure/{lesion['id']}"}}]
    return site


def result_key(context: ImageContext, card: ModelCard, part: str) -> str:
    return hashlib.sha256(f"{context.instance_uid}|{card.key}|{part}".encode()).hexdigest()[:32]


def done_key(context: ImageContext, card: ModelCard) -> str:
    """The identifier of the first result written: all results exist once it does (one transaction)."""
    return f"{FINDING_SYSTEM}|{result_key(context, card, 'class-0')}"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the model's scores say for one image: a class called (``indeterminate`` False), a benign
    call withheld because ``output`` (a concerning class) is just under its threshold, or nothing."""

    output: OutputClass
    probability: float
    indeterminate: bool = False


def reading(card: ModelCard, output: OutputClass, value: float) -> dict[str, str]:
    """POS at or above the class's threshold; IND in the indeterminate band of a concerning class; NEG."""
    if value >= output.threshold:
        return POSITIVE
    if card.concerning(output.risk_tier) and value >= output.threshold - card.indeterminate_margin:
        return INDETERMINATE_READING
    return NEGATIVE


def predicted_outcome(card: ModelCard, probabilities: Sequence[float]) -> Outcome | None:
    """Among the classes at or above their own thresholds, the highest risk tier, then the highest
    probability; no benign call while a concerning class is in its indeterminate band."""
    scored = [(c, float(probabilities[c.index])) for c in card.classes]
    positive = [(c, p) for c, p in scored if reading(card, c, p) is POSITIVE]
    top = max(positive, key=lambda cp: (card.rank(cp[0].risk_tier), cp[1]), default=None)
    if top is not None and card.concerning(top[0].risk_tier):
        return Outcome(*top)
    near = [(c, p) for c, p in scored if reading(card, c, p) is INDETERMINATE_READING]
    if near:
        return Outcome(*max(near, key=lambda cp: (card.rank(cp[0].risk_tier), cp[1])), indeterminate=True)
    return Outcome(*top) if top is not None else None


def model_label(card: ModelCard) -> str:
    return f"{card.name} {card.version}"


def demo_text(card: ModelCard, text: str) -> str:
    return text if card.clinical_use else f"DEMONSTRATION (not for clinical use): {text}"


def labelled(resource: dict[str, Any], card: ModelCard) -> dict[str, Any]:
    """AIAST on everything the model asserted; a demonstration model's output tagged and noted."""
    resource.setdefault("meta", {}).setdefault("security", []).append(AIAST)
    if not card.clinical_use:
        resource["meta"].setdefault("tag", []).append(DEMO_TAG)
        resource.setdefault("note", []).append({"text": DEMO_NOTE})
    return resource


def probability(value: float) -> dict[str, Any]:
    """A score as a Quantity (UCUM ``1``), never 1.0 or 0.0: an uncalibrated softmax is not certainty.
    Past the bounds the Quantity says "more than 0.999" / "less than 0.001" with R4 ``comparator``
    (datatypes.html#Quantity: "the real value is > stated value"); ``value-quantity`` search indexes the
    stated value, so ``ge0.5`` still finds a ">0.999"."""
    quantity: dict[str, Any] = {"value": round(value, 6), "unit": "probability", "system": UCUM, "code": "1"}
    if value > SCORE_BOUNDS[1]:
        quantity.update(value=SCORE_BOUNDS[1], comparator=">")
    elif value < SCORE_BOUNDS[0]:
        quantity.update(value=SCORE_BOUNDS[0], comparator="<")
    return quantity


def shown(value: float) -> str:
    """A score for people: never 1.00 or 0.00 (a softmax score is not certainty)."""
    return "≥0.99" if value >= 0.99 else "≤0.01" if value <= 0.01 else f"{value:.2f}"


def class_concept(card: ModelCard, output: OutputClass) -> dict[str, Any]:
    """The class as a SNOMED CT concept; a demonstration model's as text only (never found by code)."""
    if not card.clinical_use:
        return {"text": f"{output.display} (demonstration model, not a diagnosis)"}
    return {"coding": [{"system": SNOMED, "code": output.code, "display": output.display}], "text": output.display}


def outcome_concept(card: ModelCard, outcome: Outcome) -> dict[str, Any]:
    if not outcome.indeterminate:
        return class_concept(card, outcome.output)
    text = (f"Equivocal: no benign call, {outcome.output.display} scores {outcome.probability:.2f}, within "
            f"{card.indeterminate_margin:g} of its threshold {outcome.output.threshold:g}")  # fmt: skip
    return {"coding": [EQUIVOCAL], "text": text} if card.clinical_use else {"text": text}


def base_observation(context: ImageContext, card: ModelCard, device_id: str, issued: str) -> dict[str, Any]:
    """What every Observation of an analysis shares: subject, lesion, images, times, device, labels."""
    body: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "preliminary",
        "category": [IMAGING],
        "subject": {"reference": f"Patient/{context.patient_id}"},
        "focus": [{"reference": context.focus}],
        "issued": issued,
        "device": {"reference": f"Device/{device_id}", "display": model_label(card)},
        "method": {"coding": [METHOD], "text": f"AI analysis by {model_label(card)}"},
        "derivedFrom": [{"reference": image} for image in context.images],
    }
    if context.acquired:
        body["effectiveDateTime"] = context.acquired
    if context.body_site:
        body["bodySite"] = context.body_site
    return labelled(body, card)


def risk_observation(
    context: ImageContext, card: ModelCard, device_id: str, output: OutputClass, value: float, issued: str
) -> dict[str, Any]:
    """The probability the model gives one class for this lesion's image."""
    observation = base_observation(context, card, device_id, issued)
    observation["code"] = {
        "coding": [{"system": RISK_SYSTEM, "code": f"probability-of-{output.code}",
                    "display": f"Probability of {output.display}"}],
        "text": demo_text(card, f"AI probability of {output.display} (SNOMED CT {output.code})"),
    }  # fmt: skip
    observation["valueQuantity"] = probability(value)
    if card.concerning(output.risk_tier):  # a benign class's score over its threshold is no abnormal finding
        observation["interpretation"] = [{"coding": [reading(card, output, value)]}]
    observation["component"] = [
        {"code": {"coding": [{"system": FINDING_SYSTEM, "code": "threshold", "display": "Decision threshold"}],
                  "text": "decision threshold (model card)"},
         "valueQuantity": probability(output.threshold)},
        tier_component(output.risk_tier, CLASS_TIER),
    ]  # fmt: skip
    if not card.calibrated:
        observation.setdefault("note", []).append({"text": UNCALIBRATED_NOTE})
    return declare(observation, AI_RISK_RESULT)


def tier_component(tier: str, text: str = "risk tier of the predicted diagnosis (model card)") -> dict[str, Any]:
    return {"code": {"coding": [{"system": FINDING_SYSTEM, "code": "risk-tier", "display": "Risk tier"}],
                     "text": text},
            "valueCodeableConcept": {"coding": [{"system": RISK_TIER_SYSTEM, "code": tier}], "text": tier}}  # fmt: skip


def diagnosis_observation(
    context: ImageContext, card: ModelCard, device_id: str, outcome: Outcome | OutputClass, value: float,
    issued: str, risk_id: str,
) -> dict[str, Any]:  # fmt: skip
    """The model's predicted diagnosis for this lesion's image (``predicted_outcome``)."""
    if isinstance(outcome, OutputClass):
        outcome = Outcome(outcome, value)
    observation = base_observation(context, card, device_id, issued)
    observation["code"] = {"coding": [DIAGNOSIS], "text": demo_text(card, "AI-predicted diagnosis")}
    observation["valueCodeableConcept"] = outcome_concept(card, outcome)
    observation["derivedFrom"].append({"reference": f"Observation/{risk_id}"})
    tier = INDETERMINATE if outcome.indeterminate else outcome.output.risk_tier
    observation["component"] = [
        {"code": {"coding": [{"system": FINDING_SYSTEM, "code": "probability", "display": "Probability"}],
                  "text": f"probability of {outcome.output.display}"},
         "valueQuantity": probability(outcome.probability)},
        tier_component(tier),
    ]  # fmt: skip
    if not card.calibrated:
        observation.setdefault("note", []).append({"text": UNCALIBRATED_NOTE})
    return declare(observation, AI_PREDICTED_DIAGNOSIS)


def component_value(observation: dict[str, Any], code: str) -> Any:
    for component in observation.get("component", []):
        if any(c.get("code") == code for c in component.get("code", {}).get("coding", [])):
            if "valueQuantity" in component:
                return component["valueQuantity"].get("value")
            return component.get("valueCodeableConcept")
    return None
