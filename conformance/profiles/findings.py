"""Profiles of the findings on a lesion (``inference.findings``, ``fhir_server.workflow.review.decision``):
the AI's risk result per class, its predicted diagnosis, and a clinician's finding on review."""

from __future__ import annotations

from typing import Any

from conformance.profiles.builder import Element, element, invariant, profile, reference, sliced
from conformance.profiles.value_sets import AI_RISK_INTERPRETATION
from fhir_server import declared_profiles as urls
from fhir_server.workflow.review.decision import METHOD as CLINICIAN_METHOD
from fhir_server.workflow.review.decision import URGENCY_CODE
from inference.findings import DIAGNOSIS, FINDING_SYSTEM, IMAGING, METHOD, RISK_SYSTEM, UCUM
from inference.governance import AIAST

SKIN_LESION_DIAGNOSES = "https://dermbridge.org/fhir/ValueSet/skin-lesion-diagnoses"
REQUEST_PRIORITY = "http://hl7.org/fhir/ValueSet/request-priority"
AI_STATUS = invariant(  # derm review 4, M8: an AI result is never finalised without a clinician
    "dbr-ai-1",
    "An AI result is preliminary until reviewed; the clinician's finding is what becomes final",
    "status = 'preliminary' or status = 'cancelled' or status = 'entered-in-error'",
)
DEMONSTRATION_TEXT_ONLY = invariant(  # derm review 4, M8: a demonstration model's output is never coded
    "dbr-ai-2",
    "A demonstration model's output is text only: no coded value (it is not a diagnosis)",
    "meta.tag.where(system = 'urn:dermbridge:ai-use' and code = 'demonstration').exists() implies "
    "value.ofType(CodeableConcept).coding.empty()",
)
CLINICIAN_STATUS = invariant(  # derm review 4, M8: a corrected or amended finding still claims the profile
    "dbr-cf-2",
    "A clinician's finding is signed: final, or amended or corrected after sign-off",
    "status = 'final' or status = 'amended' or status = 'corrected'",
)
PROBABILITY_RANGE = invariant(
    "dbr-score-1",
    "A score is a probability: a Quantity in UCUM '1' between 0 and 1",
    "value.exists() implies (value.code = '1' and value.value >= 0 and value.value <= 1)",
)


def _finding_base(prefix: str = "Observation") -> list[Element]:
    """What every finding on a lesion has: imaging category, the patient, the lesion, the images."""
    return [
        sliced(f"{prefix}.category", "pattern", "$this", min=1),
        element(f"{prefix}.category:imaging", min=1, max="1", patternCodeableConcept=IMAGING),
        element(f"{prefix}.subject", min=1, type=reference("Patient")),
        element(f"{prefix}.focus", min=1, type=reference("BodyStructure", "Media")),
    ]


def _ai_base() -> list[Element]:
    """What the AI asserts: labelled AIAST, by its Device, from the images, preliminary until reviewed."""
    return [
        sliced("Observation.meta.security", "pattern", "$this", min=1),
        element("Observation.meta.security:aiAsserted", min=1, max="1",
                patternCoding={"system": AIAST["system"], "code": AIAST["code"]}),
        *_finding_base(),
        element("Observation.issued", min=1),
        element("Observation.device", min=1, type=reference("Device")),
        element("Observation.method", min=1, patternCodeableConcept={"coding": [METHOD]}),
        element("Observation.derivedFrom", min=1),
    ]  # fmt: skip


def _component(slice_name: str, code: str, value_type: str) -> list[Element]:
    id = f"Observation.component:{slice_name}"
    return [
        element(id, min=1, max="1"),
        element(f"{id}.code", patternCodeableConcept={"coding": [{"system": FINDING_SYSTEM, "code": code}]}),
        element(f"{id}.value[x]", min=1, type=[{"code": value_type}]),
    ]


def ai_risk_result() -> dict[str, Any]:
    return profile(
        urls.AI_RISK_RESULT,
        "Observation",
        "DermBridge AI risk result",
        "The probability a model gives one of its classes for a lesion's image: code 'probability of <class>', "
        "value a Quantity in UCUM '1' (never 0 or 1), the card's decision threshold and the class's risk tier as "
        "components. Never a diagnosis.",
        [
            *_ai_base(),
            sliced("Observation.code.coding", "value", "system", min=1),
            element("Observation.code.coding:risk", min=1, max="1"),
            element("Observation.code.coding:risk.system", min=1, fixedUri=RISK_SYSTEM),
            element("Observation.code.coding:risk.code", min=1),
            element("Observation.value[x]", min=1, type=[{"code": "Quantity"}], patternQuantity={"system": UCUM}),
            element("Observation.interpretation", max="1",
                    binding={"strength": "required", "valueSet": AI_RISK_INTERPRETATION}),
            sliced("Observation.component", "pattern", "code", min=2),
            *_component("threshold", "threshold", "Quantity"),
            *_component("riskTier", "risk-tier", "CodeableConcept"),
        ],
        constraints=(PROBABILITY_RANGE, AI_STATUS, DEMONSTRATION_TEXT_ONLY),
    )  # fmt: skip


def ai_predicted_diagnosis() -> dict[str, Any]:
    return profile(
        urls.AI_PREDICTED_DIAGNOSIS,
        "Observation",
        "DermBridge AI predicted diagnosis",
        "The model's predicted diagnosis for a lesion (SNOMED CT 439401001 |Diagnosis|): the class it calls, or "
        "42425007 |Equivocal| while a concerning class is just under its threshold; a demonstration model's is "
        "text only. Derived from the risk result it rests on.",
        [
            *_ai_base(),
            element("Observation.code", patternCodeableConcept={"coding": [{"system": DIAGNOSIS["system"],
                                                                            "code": DIAGNOSIS["code"]}]}),
            element("Observation.value[x]", min=1, type=[{"code": "CodeableConcept"}],
                    binding={"strength": "extensible", "valueSet": SKIN_LESION_DIAGNOSES}),
            sliced("Observation.component", "pattern", "code", min=2),
            *_component("probability", "probability", "Quantity"),
            *_component("riskTier", "risk-tier", "CodeableConcept"),
        ],
        constraints=(
            AI_STATUS,
            DEMONSTRATION_TEXT_ONLY,
            invariant("dbr-dx-1", "The prediction names the risk result it rests on",
                      "derivedFrom.where(reference.startsWith('Observation/')).exists()"),
        ),
    )  # fmt: skip


def clinician_finding() -> dict[str, Any]:
    return profile(
        urls.CLINICIAN_FINDING,
        "Observation",
        "DermBridge clinician finding",
        "A clinician's finding on a lesion at review: the AI's result confirmed (a copy derived from it) or the "
        "clinician's own diagnosis (override), with the referral urgency. Final, performed by the clinician, "
        "never by a device; amended or corrected when the clinician changes it after sign-off.",
        [
            *_finding_base(),
            element("Observation.performer", min=1, type=reference("Practitioner", "PractitionerRole")),
            element("Observation.device", max="0"),
            element("Observation.method", min=1, patternCodeableConcept=CLINICIAN_METHOD),
            element("Observation.value[x]", min=1),
            sliced("Observation.component", "pattern", "code"),
            element("Observation.component:urgency", max="1"),
            element("Observation.component:urgency.code", patternCodeableConcept={"coding": [
                {"system": URGENCY_CODE["system"], "code": URGENCY_CODE["code"]}]}),
            element("Observation.component:urgency.value[x]", min=1, type=[{"code": "CodeableConcept"}],
                    binding={"strength": "required", "valueSet": REQUEST_PRIORITY}),
        ],
        constraints=(  # derm review 4, H1: Equivocal (SNOMED 42425007) is not a diagnosis a clinician signs
            CLINICIAN_STATUS,
            invariant("dbr-cf-1", "A clinician's diagnosis is never 'Equivocal' (SNOMED CT 42425007)",
                      "code.coding.where(code = '439401001').exists() implies "
                      "value.ofType(CodeableConcept).coding.where(code = '42425007').empty()"),
        ),
    )  # fmt: skip
