"""The model card as people read it (the AI Model-Card DocumentReference's Markdown)."""

from __future__ import annotations

import dataclasses

from inference.demo import demo_card
from inference.governance import card_markdown


def test_a_clinical_card_shows_subgroup_metrics_with_intervals() -> None:
    performance = ({"subgroup": "Fitzpatrick V-VI", "metric": "sensitivity (melanoma)", "value": 0.81,
                    "ci95": [0.72, 0.88], "n": 140},)  # fmt: skip
    card = dataclasses.replace(demo_card("2.0.0", performance), clinical_use=True, fitzpatrick_coverage="I-VI")
    markdown = card_markdown(card, "ab" * 32)
    assert "Fitzpatrick V-VI: sensitivity (melanoma) 0.81 (95% CI 0.72-0.88), n=140" in markdown
    assert (
        "**NOT FOR CLINICAL USE.**" not in markdown
        and "Declared for clinical use by its provider" in markdown
        and f"`{'ab' * 32}`" in markdown
    )
    assert "| 1 | 93655004 | Malignant melanoma of skin | 0.5 | melanoma |" in markdown


def test_the_demo_card_says_it_has_no_clinical_metrics() -> None:
    markdown = card_markdown(demo_card("1.0.0"), "")
    assert "**NOT FOR CLINICAL USE.**" in markdown and "no clinical performance metrics" in markdown
    assert "Patients under 18 years." in markdown and "- no metrics" in markdown
