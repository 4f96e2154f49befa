"""The pure parts of a flow (issue 14): escalation and discharge decisions, and the worker's routing."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fhir_server.workflow.definition import parse_flow
from fhir_server.workflow.escalation import DISCHARGE, REVIEW, SIGN_OFF, judge
from fhir_server.workflow.events import ClassScore, FindingsCommitted
from fhir_server.workflow.library import shipped
from fhir_server.workflow.routing import models_for

AI_ONLY, SIGN_OFF_FLOW = parse_flow(shipped("ai-only")), parse_flow(shipped("ai-then-signoff"))


def findings(nevus: float, melanoma: float, *, cleared: bool = True, equivocal: bool = False) -> FindingsCommitted:
    scores = (ClassScore("400010006", "Melanocytic nevus of skin", "benign", nevus, False),
              ClassScore("93655004", "Malignant melanoma of skin", "melanoma", melanoma, True))  # fmt: skip
    top = "400010006" if nevus >= melanoma else "93655004"
    return FindingsCommitted("r", "p", "1.2", "m@1", cleared, scores, top, equivocal, routed=("m@1",))


@pytest.mark.parametrize(
    ("case", "action", "urgent", "words"),
    [
        (findings(0.95, 0.05), DISCHARGE, False, "discharged by the AI"),
        (findings(0.95, 0.05, cleared=False), REVIEW, False, "does not allow clinical use"),
        (findings(0.85, 0.15), REVIEW, False, "under 0.90"),
        (findings(0.6, 0.4), REVIEW, True, "Malignant melanoma of skin probability 0.40"),
        (findings(0.95, 0.05, equivocal=True), REVIEW, False, "equivocal"),
    ],
)
def test_ai_only_discharges_only_what_the_definition_and_the_card_allow(
    case: FindingsCommitted, action: str, urgent: bool, words: str
) -> None:
    verdict = judge(AI_ONLY, case)
    assert (verdict.action, verdict.urgent) == (action, urgent)
    assert words in verdict.reason


def test_sign_off_reviews_every_case_and_escalation_sets_the_urgency() -> None:
    assert judge(SIGN_OFF_FLOW, findings(0.99, 0.01)).action == SIGN_OFF
    assert judge(SIGN_OFF_FLOW, findings(0.5, 0.5)).urgent


def test_routing_by_model_and_body_site() -> None:
    flow = replace(AI_ONLY, ai=(replace(AI_ONLY.ai[0], models=("b@1",), body_sites=("39937001",)),))
    arm = {"coding": [{"system": "http://snomed.info/sct", "code": "39937001"}]}
    assert models_for(flow, ["a@1", "b@1"], arm) == ["b@1"]
    assert models_for(flow, ["a@1", "b@1"], {"coding": [{"code": "69536005"}]}) == []  # another site: no AI
    assert models_for(AI_ONLY, ["a@1", "b@1"], None) == ["a@1", "b@1"]
    assert models_for(parse_flow(shipped("human-only")), ["a@1"], arm) == []
