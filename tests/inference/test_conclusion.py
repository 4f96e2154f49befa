"""The case conclusion follows the card's risk hierarchy across lesions and images, whatever their
order; only clinical models conclude (a labelled conclusionCode), a demonstration model never does;
the text names lesions by site, counts them, never shows 1.00, and a clinician's draft stays."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import pytest

from inference.conclusion import AI_PREFIX, INLINE_LABEL, ai_wrote_conclusion, conclude
from inference.demo import demo_card
from inference.findings import ImageContext, diagnosis_observation, risk_observation
from inference.governance import AIAST
from inference.model_card import ModelCard, OutputClass

CLASSES = (OutputClass(0, "400096001", "Melanocytic nevus", 0.5, "benign"),
           OutputClass(1, "254701007", "Basal cell carcinoma of skin", 0.5, "basal-cell-carcinoma"),
           OutputClass(2, "93655004", "Malignant melanoma of skin", 0.5, "melanoma"))  # fmt: skip


CLINICAL = dataclasses.replace(demo_card("1"), id="clin", name="Clinical model", version="2.0", classes=CLASSES,
                               clinical_use=True)  # fmt: skip
DEMO = demo_card("1")  # nevus 0, melanoma 1


def context(n: int) -> ImageContext:
    return ImageContext(f"1.2.{n}", "p1", f"m{n}", "s1", "r1", lesion_id=f"b{n}")


def diagnosis(card: ModelCard, n: int, index: int, probability: float) -> dict[str, Any]:
    body = diagnosis_observation(context(n), card, "d1", card.output(index), probability, "2026-11-30T12:00:00Z", "x")
    return {**body, "id": f"o{n}"}


def risk(card: ModelCard, n: int, index: int, probability: float) -> dict[str, Any]:
    body = risk_observation(context(n), card, "d1", card.output(index), probability, "2026-11-30T12:00:00Z")
    return {**body, "id": f"r{n}-{index}"}


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
    assert len(outcomes) == 1 and "on 1 of 4 lesion(s) analysed" in outcomes.pop()


def test_the_hierarchy_is_the_cards() -> None:
    """A card may order its malignant tiers; it may not rank a benign or pre-malignant tier above one."""
    card = dataclasses.replace(demo_card("1"), classes=CLASSES, clinical_use=True,
                               risk_hierarchy=("basal-cell-carcinoma", "melanoma", "benign"))  # fmt: skip
    report: dict[str, Any] = {}
    conclude(report, card, [diagnosis(card, 1, 2, 0.99), diagnosis(card, 2, 1, 0.6)])
    assert report["conclusionCode"][0]["coding"][0]["code"] == "254701007"
    with pytest.raises(ValueError, match="risk hierarchy"):
        ModelCard.from_dict({**card.to_dict(), "risk_hierarchy": ["melanoma", "benign"]})


@pytest.mark.parametrize("hierarchy", [("benign", "basal-cell-carcinoma", "melanoma"),
                                       ("melanoma", "benign", "basal-cell-carcinoma"),
                                       ("melanoma", "basal-cell-carcinoma", "benign", "pre-malignant")])  # fmt: skip
def test_a_card_that_inverts_the_risk_hierarchy_is_refused(hierarchy: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="ranks a lower risk above a higher one"):
        ModelCard.from_dict({**CLINICAL.to_dict(), "risk_hierarchy": list(hierarchy)})


def test_only_clinical_models_conclude_and_the_deciding_model_is_named() -> None:
    demo_melanoma, clinical_nevus = diagnosis(DEMO, 1, 1, 0.9998), diagnosis(CLINICAL, 2, 0, 0.8)
    report: dict[str, Any] = {}
    conclude(report, CLINICAL, [demo_melanoma, clinical_nevus])
    assert [c["code"] for c in report["conclusionCode"][0]["coding"]] == ["400096001"]
    assert report["conclusion"].startswith(f"{AI_PREFIX}Clinical model 2.0)")
    assert "demonstration model's results in this case are not part of this conclusion" in report["conclusion"]
    report = {}
    conclude(report, DEMO, [diagnosis(CLINICAL, 1, 2, 0.7)])  # the demo analysed last: the clinical melanoma stands
    assert report["conclusionCode"][0]["coding"][0]["code"] == "93655004"
    assert report["conclusion"].startswith(f"{AI_PREFIX}Clinical model 2.0)") and "DEMONSTRATION" not in str(report)
    report = {}
    conclude(report, CLINICAL, [demo_melanoma])  # only demonstration findings: the demonstration labelling
    assert "conclusionCode" not in report and report["conclusion"].startswith("DEMONSTRATION ONLY")


def test_the_text_names_lesions_by_site_counts_images_and_never_says_certain() -> None:
    report: dict[str, Any] = {"media": [{"link": {"reference": f"Media/m{n}"}} for n in (1, 2, 3)]}
    found = [diagnosis(CLINICAL, 1, 0, 0.999), risk(CLINICAL, 1, 2, 0.12), risk(CLINICAL, 1, 1, 0.003),
             risk(CLINICAL, 2, 0, 0.41), risk(CLINICAL, 2, 2, 0.05)]  # fmt: skip
    conclude(report, CLINICAL, found, {"BodyStructure/b1": "Skin structure of back, Left"})
    text = report["conclusion"]
    assert "on 1 of 2 lesion(s) analysed" in text  # lesion b2 has no predicted diagnosis and still counts
    assert "the lesion at Skin structure of back, Left (image Media/m1, probability ≥0.99)" in text
    assert "BodyStructure/" not in text  # a lesion by its site, never a bare id
    assert "1.00" not in text
    assert "highest malignant-class score: Probability of Malignant melanoma of skin 0.12" in text  # benign call
    assert "1 of 3 image(s) of the case have no AI result" in text


def test_every_lesion_with_the_deciding_finding_is_named() -> None:
    """derm review 1, finding 3: six lesions on the back, three called melanoma: all three are named, by
    site and series, with their image and score, the highest first; not only the most concerning one."""
    scores = ((0, 0.9), (2, 0.971), (2, 0.997), (0, 0.8), (2, 0.6), (1, 0.9))  # (class, score) of lesions 1-6
    found = [diagnosis(CLINICAL, n, index, score) for n, (index, score) in enumerate(scores, start=1)]
    sites = {f"BodyStructure/b{n}": f"Back, series {n} (Lesion {n})" for n in range(1, 7)}
    report: dict[str, Any] = {}
    conclude(report, CLINICAL, found, sites)
    text = report["conclusion"]
    assert "most concerning finding, Malignant melanoma of skin, on 3 of 6 lesion(s) analysed: " in text
    named = [
        "Back, series 3 (Lesion 3) (image Media/m3, probability ≥0.99",
        "Back, series 2 (Lesion 2) (image Media/m2, probability 0.97",
        "Back, series 5 (Lesion 5) (image Media/m5",
    ]
    positions = [text.index(n) for n in named]
    assert positions == sorted(positions)  # the highest score first
    assert "Lesion 1" not in text and "Lesion 6" not in text and "BodyStructure/" not in text


def test_a_clinicians_draft_is_not_the_ais_to_rewrite() -> None:
    report: dict[str, Any] = {}
    conclude(report, CLINICAL, [diagnosis(CLINICAL, 1, 2, 0.7)])
    assert ai_wrote_conclusion(report) and ai_wrote_conclusion({"status": "preliminary"})
    draft = {**report, "conclusion": "Dysplastic naevus, excise (Dr Example, draft)"}  # the label copied along
    assert not ai_wrote_conclusion(draft)


def test_a_demo_card_never_concludes_a_diagnosis() -> None:
    card = demo_card("1")
    report: dict[str, Any] = {"conclusionCode": [{"text": "left from before"}]}
    conclude(report, card, [diagnosis(card, 1, 1, 0.99)])
    assert "conclusionCode" not in report
    assert report["conclusion"].startswith("DEMONSTRATION ONLY, NOT A DIAGNOSIS")
    assert report["meta"]["tag"][0]["code"] == "demonstration"
    assert report["meta"]["security"][0]["code"] == "PROCESSINLINELABEL"
