"""What one image's scores become: the predicted diagnosis (highest risk tier among the classes at or
above their own thresholds; equivocal rather than benign near a concerning threshold), the risk
results' interpretation, and a demonstration model's values that no code search finds."""

from __future__ import annotations

import dataclasses

import pytest

from inference.demo import demo_card
from inference.findings import ImageContext, diagnosis_observation, predicted_outcome, risk_observation
from inference.governance import card_markdown
from inference.model_card import OutputClass

CLASSES = (OutputClass(0, "400096001", "Melanocytic nevus", 0.5, "benign"),
           OutputClass(1, "254701007", "Basal cell carcinoma of skin", 0.5, "basal-cell-carcinoma"),
           OutputClass(2, "93655004", "Malignant melanoma of skin", 0.3, "melanoma"))  # fmt: skip
CLINICAL = dataclasses.replace(demo_card("1"), id="clin", name="Clinical model", version="2.0", classes=CLASSES,
                               clinical_use=True)  # fmt: skip
CONTEXT = ImageContext("1.2.3", "p1", "m1", "s1", "r1", lesion_id="b1")
NOW = "2026-11-30T12:00:00Z"


@pytest.mark.parametrize(
    ("probabilities", "code", "indeterminate"),
    [
        ((0.55, 0.05, 0.40), "93655004", False),  # nevus scores highest, melanoma is over its own threshold
        ((0.45, 0.20, 0.35), "93655004", False),  # the top class under its threshold, melanoma over its own
        ((0.25, 0.05, 0.70), "93655004", False),
        ((0.50, 0.45, 0.05), "254701007", True),  # a nevus call withheld: BCC within 0.1 of its threshold
        ((0.62, 0.10, 0.28), "93655004", True),
        ((0.80, 0.15, 0.05), "400096001", False),
    ],
)
def test_the_predicted_diagnosis_is_the_highest_risk_over_its_threshold(
    probabilities: tuple[float, ...], code: str, indeterminate: bool
) -> None:
    outcome = predicted_outcome(CLINICAL, probabilities)
    assert outcome is not None and outcome.output.code == code and outcome.indeterminate is indeterminate


def test_no_diagnosis_when_nothing_is_near_a_threshold() -> None:
    assert predicted_outcome(CLINICAL, (0.40, 0.35, 0.19)) is None
    wider = dataclasses.replace(CLINICAL, indeterminate_margin=0.2)
    outcome = predicted_outcome(wider, (0.40, 0.35, 0.19))
    assert outcome is not None and outcome.indeterminate and outcome.output.code == "93655004"


def test_an_equivocal_outcome_is_coded_as_such() -> None:
    outcome = predicted_outcome(CLINICAL, (0.62, 0.10, 0.28))
    assert outcome is not None
    body = diagnosis_observation(CONTEXT, CLINICAL, "d1", outcome, outcome.probability, NOW, "r1")
    assert body["valueCodeableConcept"]["coding"] == [{"system": "http://snomed.info/sct", "code": "42425007",
                                                       "display": "Equivocal"}]  # fmt: skip
    assert "Malignant melanoma of skin scores 0.28" in body["valueCodeableConcept"]["text"]
    tier = next(c for c in body["component"] if c["code"]["coding"][0]["code"] == "risk-tier")
    assert tier["valueCodeableConcept"]["coding"][0]["code"] == "indeterminate"


@pytest.mark.parametrize(("index", "value", "reading"), [(2, 0.30, "POS"), (2, 0.22, "IND"), (2, 0.1, "NEG"),
                                                         (1, 0.5, "POS"), (1, 0.45, "IND")])  # fmt: skip
def test_risk_results_are_interpreted_against_their_threshold(index: int, value: float, reading: str) -> None:
    body = risk_observation(CONTEXT, CLINICAL, "d1", CLASSES[index], value, NOW)
    assert body["interpretation"][0]["coding"][0]["code"] == reading
    assert body["interpretation"][0]["coding"][0]["system"].endswith("/v3-ObservationInterpretation")
    threshold = body["component"][0]["code"]["coding"][0]
    assert threshold["code"] == "threshold" and threshold["display"] == "Decision threshold"
    assert body["method"]["text"] == "AI analysis by Clinical model 2.0"
    assert body["device"]["display"] == "Clinical model 2.0"
    assert any("softmax score, not a calibrated probability" in n["text"] for n in body["note"])
    calibrated = risk_observation(CONTEXT, dataclasses.replace(CLINICAL, calibrated=True), "d1", CLASSES[0], 0.2, NOW)
    assert "note" not in calibrated


def test_a_demonstration_never_writes_a_disease_code() -> None:
    demo = demo_card("1")
    body = diagnosis_observation(CONTEXT, demo, "d1", demo.output(1), 0.9998, NOW, "r1")
    assert "coding" not in body["valueCodeableConcept"]
    assert body["valueCodeableConcept"]["text"].startswith("Malignant melanoma of skin (demonstration")
    assert body["code"]["text"].startswith("DEMONSTRATION")
    risk = risk_observation(CONTEXT, demo, "d1", demo.output(1), 0.9998, NOW)
    assert risk["code"]["text"].startswith("DEMONSTRATION")


def test_the_card_claims_no_clearance_it_does_not_carry() -> None:
    markdown = card_markdown(CLINICAL, "")
    assert "Cleared for clinical use" not in markdown and "no regulatory clearance recorded" in markdown
    assert "uncalibrated softmax scores" in markdown
    cleared = card_markdown(dataclasses.replace(CLINICAL, regulatory_clearance="FDA 510(k) K000000"), "")
    assert "Regulatory clearance: FDA 510(k) K000000." in cleared


@pytest.mark.parametrize("value", [0.45, 0.5, 0.99])
def test_a_benign_class_is_never_flagged_positive(value: float) -> None:
    """derm review 1, finding 9: an EHR highlights POS as abnormal; a naevus score is no abnormal finding."""
    body = risk_observation(CONTEXT, CLINICAL, "d1", CLASSES[0], value, NOW)
    assert "interpretation" not in body
    tier = next(c for c in body["component"] if c["code"]["coding"][0]["code"] == "risk-tier")
    assert tier["code"]["text"].startswith("class risk tier")


@pytest.mark.parametrize(("value", "stated", "comparator"), [(1.0, 0.999, ">"), (0.99996, 0.999, ">"),
                                                              (1.1e-05, 0.001, "<"), (0.0, 0.001, "<"),
                                                              (0.42, 0.42, None)])  # fmt: skip
def test_a_score_is_never_written_as_certainty(value: float, stated: float, comparator: str | None) -> None:
    """derm review 1, finding 7: an uncalibrated softmax 1.0 / 0.0 is written as "> 0.999" / "< 0.001"."""
    body = risk_observation(CONTEXT, CLINICAL, "d1", CLASSES[2], value, NOW)
    assert body["valueQuantity"]["value"] == stated and body["valueQuantity"].get("comparator") == comparator
    outcome = predicted_outcome(CLINICAL, (0.0, 0.0, value))
    if outcome is not None:
        called = diagnosis_observation(CONTEXT, CLINICAL, "d1", outcome, outcome.probability, NOW, "r1")
        score = next(c for c in called["component"] if c["code"]["coding"][0]["code"] == "probability")
        assert score["valueQuantity"]["value"] == stated
