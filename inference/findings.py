"""Per lesion and model run, what the model said (observation.html, R4):

- one **risk result** per class of the model card: an Observation whose ``code`` is what was assessed
  ("probability of <class>", a DermBridge code naming the class's SNOMED CT concept) and whose
  ``valueQuantity`` is the probability (UCUM ``1``), with the card's decision threshold as a
  component. The disease is never a value here, so ``value-concept=<disease>`` finds no negative;
- one **predicted diagnosis**, only for the top class when it reaches the card's threshold: code
  SNOMED CT 439401001 |Diagnosis (observable entity)|, value the class's SNOMED CT concept, its
  probability and risk tier as components.

Both: ``focus`` the lesion (BodyStructure), ``derivedFrom`` the images (ImagingStudy, Media; never
a saliency map), ``effectiveDateTime`` when the image was taken, ``issued`` when it was analysed,
``device`` the model, ``meta.security`` AIAST; a demonstration model's results are tagged as such.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from inference.governance import AIAST
from inference.model_card import SNOMED, ModelCard, OutputClass

FINDING_SYSTEM = "urn:dermbridge:ai-result"
RISK_SYSTEM = "urn:dermbridge:ai-risk"
RISK_TIER_SYSTEM = "urn:dermbridge:risk-tier"
DIAGNOSIS = {"system": SNOMED, "code": "439401001", "display": "Diagnosis"}
DIAGNOSIS_TOKEN = f"{SNOMED}|439401001"
UCUM = "http://unitsofmeasure.org"
IMAGING = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "imaging",
                       "display": "Imaging"}]}  # fmt: skip
METHOD = {"coding": [{"system": "urn:dermbridge:method", "code": "ai-analysis", "display": "AI analysis"}],
          "text": "AI analysis"}  # fmt: skip
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


def result_key(context: ImageContext, card: ModelCard, part: str) -> str:
    return hashlib.sha256(f"{context.instance_uid}|{card.key}|{part}".encode()).hexdigest()[:32]


def done_key(context: ImageContext, card: ModelCard) -> str:
    """The identifier of the first result written: all results exist once it does (one transaction)."""
    return f"{FINDING_SYSTEM}|{result_key(context, card, 'class-0')}"


def labelled(resource: dict[str, Any], card: ModelCard) -> dict[str, Any]:
    """AIAST on everything the model asserted; a demonstration model's output tagged and noted."""
    resource.setdefault("meta", {}).setdefault("security", []).append(AIAST)
    if not card.clinical_use:
        resource["meta"].setdefault("tag", []).append(DEMO_TAG)
        resource.setdefault("note", []).append({"text": DEMO_NOTE})
    return resource


def probability(value: float) -> dict[str, Any]:
    return {"value": round(value, 6), "unit": "probability", "system": UCUM, "code": "1"}


def class_concept(output: OutputClass) -> dict[str, Any]:
    return {"coding": [{"system": SNOMED, "code": output.code, "display": output.display}], "text": output.display}


def base_observation(context: ImageContext, card: ModelCard, device_id: str, issued: str) -> dict[str, Any]:
    """What every Observation of an analysis shares: subject, lesion, images, times, device, labels."""
    body: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "preliminary",
        "category": [IMAGING],
        "subject": {"reference": f"Patient/{context.patient_id}"},
        "focus": [{"reference": context.focus}],
        "issued": issued,
        "device": {"reference": f"Device/{device_id}"},
        "method": METHOD,
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
        "text": f"AI probability of {output.display} (SNOMED CT {output.code})",
    }  # fmt: skip
    observation["valueQuantity"] = probability(value)
    observation["component"] = [{
        "code": {"coding": [{"system": FINDING_SYSTEM, "code": "threshold"}], "text": "decision threshold"},
        "valueQuantity": probability(output.threshold),
    }]  # fmt: skip
    return observation


def diagnosis_observation(
    context: ImageContext, card: ModelCard, device_id: str, output: OutputClass, value: float, issued: str,
    risk_id: str,
) -> dict[str, Any]:  # fmt: skip
    """The model's predicted diagnosis for this lesion's image: its top class, at or above threshold."""
    observation = base_observation(context, card, device_id, issued)
    observation["code"] = {"coding": [DIAGNOSIS], "text": "AI-predicted diagnosis"}
    observation["valueCodeableConcept"] = class_concept(output)
    observation["derivedFrom"].append({"reference": f"Observation/{risk_id}"})
    observation["component"] = [
        {"code": {"coding": [{"system": FINDING_SYSTEM, "code": "probability"}], "text": "probability"},
         "valueQuantity": probability(value)},
        {"code": {"coding": [{"system": FINDING_SYSTEM, "code": "risk-tier"}], "text": "risk tier (model card)"},
         "valueCodeableConcept": {"coding": [{"system": RISK_TIER_SYSTEM, "code": output.risk_tier}],
                                  "text": output.risk_tier}},
    ]  # fmt: skip
    return observation


def component_value(observation: dict[str, Any], code: str) -> Any:
    for component in observation.get("component", []):
        if any(c.get("code") == code for c in component.get("code", {}).get("coding", [])):
            if "valueQuantity" in component:
                return component["valueQuantity"].get("value")
            return component.get("valueCodeableConcept")
    return None
