"""The decision form as the review operations' Parameters (``fhir_server.reviewer_app.decision_form``)."""

from __future__ import annotations

import pytest

from fhir_server.reviewer_app.decision_form import FormError, operation

DIAGNOSES = {"93655004": "Malignant melanoma of skin", "400096001": "Melanocytic nevus"}
OVERRIDE = {"decision": "override", "lesion": "BodyStructure/b1", "diagnosis": "93655004", "urgency": "asap",
            "management": "biopsy", "note": "Atypical network."}  # fmt: skip


def test_an_override_names_the_lesion_diagnosis_urgency_and_management() -> None:
    chosen = operation(OVERRIDE, DIAGNOSES)
    assert chosen.name == "complete"
    named = {p["name"]: p for p in chosen.parameters["parameter"]}
    assert named["decision"]["valueCode"] == "override"
    parts = {p["name"]: p for p in named["finding"]["part"]}
    assert parts["lesion"]["valueReference"] == {"reference": "BodyStructure/b1"}
    assert parts["diagnosis"]["valueCodeableConcept"]["coding"][0]["code"] == "93655004"
    assert parts["urgency"]["valueCode"] == "asap"
    assert parts["note"]["valueString"] == "Management: Biopsy. Atypical network."
    assert named["conclusion"]["valueString"].startswith("Malignant melanoma of skin (asap). Management: Biopsy.")


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"diagnosis": "123"}, "diagnosis"),  # not in the value set
        ({"urgency": "whenever"}, "urgency"),
        ({"management": "wait"}, "management"),
        ({"lesion": "Patient/1"}, "lesion"),
        ({"decision": "maybe"}, "confirm, override or decline"),
        ({"decision": "decline", "reason": ""}, "reason"),
    ],
)
def test_an_incomplete_form_says_what_is_missing(change: dict[str, str], said: str) -> None:
    with pytest.raises(FormError, match=said):
        operation({**OVERRIDE, **change}, DIAGNOSES)


def test_confirm_and_decline() -> None:
    assert operation({"decision": "confirm"}, DIAGNOSES).parameters["parameter"] == [
        {"name": "decision", "valueCode": "confirm"}
    ]
    declined = operation({"decision": "decline", "reason": "image-quality", "note": "blurred"}, DIAGNOSES)
    assert declined.name == "decline"
    assert declined.parameters["parameter"] == [
        {"name": "reason", "valueCode": "image-quality"},
        {"name": "note", "valueString": "blurred"},
    ]


def test_a_note_typed_with_confirm_is_kept_in_the_conclusion() -> None:
    chosen = operation({"decision": "confirm", "note": " Dermoscopy reassuring. "}, DIAGNOSES)
    assert chosen.parameters["parameter"] == [
        {"name": "decision", "valueCode": "confirm"},
        {"name": "conclusion", "valueString": "Confirmed on clinician review. Reviewer's note: Dermoscopy reassuring."},
    ]
