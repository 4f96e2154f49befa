"""The case conclusion follows the card's risk hierarchy across lesions and images, whatever their
order; a clinical card writes a labelled conclusionCode, the demo card never does."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import pytest

from inference.conclusion import INLINE_LABEL, conclude
from inference.demo import demo_card
from inference.findings import ImageContext, diagnosis_observation
from inference.governance import AIAST
from inference.model_card import ModelCard, OutputClass

CLASSES = (OutputClass(0, "400010006", "Melanocytic nevus of skin", 0.5, "benign"),
           OutputClass(1, "254701007", "Basal cell carcinoma of skin", 0.5, "basal-cell-carcinoma"),
           OutputClass(2, "93655004", "Malignant melanoma of skin", 0.5, "melanoma"))  # fmt: skip


def diagnosis(card: ModelCard, n: int, index: int, probability: float) -> dict[str, Any]:
    context = ImageContext(f"1.2.{n}", "p1", f"m{n}", "s1", "r1", lesion_id=f"b{n}")
    body = diagnosis_observation(context, card, "d1", card.output(index), probability, "2026-11-30T12:00:00Z", "x")
    return {**body, "id": f"o{n}"}


def test_the_most_concerning_finding_decides_in_any_order() -> None:
    card = dataclasses.replace(demo_card("1"), classes=CLASSES, clinical_use=True)
    found = [diagnosis(card, 1, 0, 0.99), diagnosis(card, 2, 2, 0.61), diagnosis(card, 3, 1, 0.97),
             diagnosis(card, 4, 0, 0.7)]  # fmt: skip
    outcomes = set()
    for order in itertools.permutations(found):
        report: dict[str, Any] = {}
        conclude(report, card, list(order))
        outcomes.add(report["conclusion"])
        assert report["conclusionCode"][0]["coding"][0]["code"] == "93655004"  # a melanoma at 0.61 beats a BCC at 0.97
        assert report["conclusionCode"][0]["extension"] == [{"url": INLINE_LABEL, "valueCoding": AIAST}]
    assert len(outcomes) == 1 and "across 4 lesion(s)" in outcomes.pop()


def test_the_hierarchy_is_the_cards() -> None:
    card = dataclasses.replace(demo_card("1"), classes=CLASSES, clinical_use=True,
                               risk_hierarchy=("basal-cell-carcinoma", "melanoma", "benign"))  # fmt: skip
    report: dict[str, Any] = {}
    conclude(report, card, [diagnosis(card, 1, 2, 0.99), diagnosis(card, 2, 1, 0.6)])
    assert report["conclusionCode"][0]["coding"][0]["code"] == "254701007"
    with pytest.raises(ValueError, match="risk hierarchy"):
        ModelCard.from_dict({**card.to_dict(), "risk_hierarchy": ["melanoma", "benign"]})


def test_a_demo_card_never_concludes_a_diagnosis() -> None:
    card = demo_card("1")
    report: dict[str, Any] = {"conclusionCode": [{"text": "left from before"}]}
    conclude(report, card, [diagnosis(card, 1, 1, 0.99)])
    assert "conclusionCode" not in report
    assert report["conclusion"].startswith("DEMONSTRATION ONLY, NOT A DIAGNOSIS")
    assert report["meta"]["tag"][0]["code"] == "demonstration"
    assert report["meta"]["security"][0]["code"] == "PROCESSINLINELABEL"
