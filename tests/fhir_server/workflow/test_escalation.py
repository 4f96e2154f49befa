"""The pure parts of a flow (issue 14): escalation and discharge decisions, and the worker's routing."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from fhir_server.errors import OperationOutcomeError
from fhir_server.workflow.definition import parse_flow
from fhir_server.workflow.escalation import DISCHARGE, REVIEW, SIGN_OFF, judge
from fhir_server.workflow.events import ClassScore, FindingsCommitted
from fhir_server.workflow.library import shipped
from fhir_server.workflow.routing import DERMOSCOPIC_PHOTOGRAPHY, Image, models_for, uncovered

VL_PHOTOGRAPHIC = "1.2.840.10008.5.1.4.1.1.77.1.4"
AI_ONLY, SIGN_OFF_FLOW = parse_flow(shipped("ai-only")), parse_flow(shipped("ai-then-signoff"))


def findings(nevus: float, melanoma: float, *, cleared: bool = True, equivocal: bool = False) -> FindingsCommitted:
    scores = (ClassScore("400096001", "Melanocytic nevus", "benign", nevus, False, 0.5),
              ClassScore("93655004", "Malignant melanoma of skin", "melanoma", melanoma, True, 0.5))  # fmt: skip
    top = "400096001" if nevus >= melanoma else "93655004"
    return FindingsCommitted("r", "p", "1.2", "m@1", cleared, scores, top, equivocal, routed=("m@1",))


@pytest.mark.parametrize(
    ("case", "action", "urgent", "words"),
    [
        (findings(0.95, 0.05), DISCHARGE, False, "discharged by the AI"),
        (findings(0.95, 0.05, cleared=False), REVIEW, False, "does not allow clinical use"),
        (findings(0.85, 0.15), REVIEW, False, "under 0.90"),
        (findings(0.6, 0.4), REVIEW, True, "Malignant melanoma of skin probability 0.40"),
        (findings(0.6, 0.4), REVIEW, True, "under the model's decision threshold 0.50 (the AI result reads negative)"),
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
    arm = Image(frozenset({"39937001"}))
    assert models_for(flow, ["a@1", "b@1"], arm) == ["b@1"]
    assert models_for(flow, ["a@1", "b@1"], Image(frozenset({"69536005"}))) == []  # another site: no AI
    assert models_for(AI_ONLY, ["a@1", "b@1"], Image()) == ["a@1", "b@1"]
    assert models_for(parse_flow(shipped("human-only")), ["a@1"], arm) == []


DERMOSCOPY = Image.of({"modality": {"coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM",
                                                "code": "DMS"}]}}, DERMOSCOPIC_PHOTOGRAPHY)  # fmt: skip
OVERVIEW = Image.of({"modality": {"coding": [{"code": "XC"}]}}, VL_PHOTOGRAPHIC)


def ai_step(model: str, **values: str) -> dict[str, Any]:
    given = {"model": model, **values}
    fhirpath = "text/fhirpath"
    dynamic = [{"path": k, "expression": {"language": fhirpath, "expression": f"'{v}'"}} for k, v in given.items()]
    return {"code": [{"coding": [{"system": "urn:dermbridge:workflow-step", "code": "ai-analysis"}]}],
            "dynamicValue": dynamic}  # fmt: skip


def with_ai_steps(*actions: dict[str, Any]) -> dict[str, Any]:
    plan = shipped("ai-then-signoff")
    plan["action"] = [a for a in plan["action"] if a["code"][0]["coding"][0]["code"] != "ai-analysis"]
    plan["action"][1:1] = list(actions)  # after the consent gate
    return plan


def test_routing_by_image_type_sends_each_image_to_its_model() -> None:
    flow = parse_flow(with_ai_steps(ai_step("derm@1", imageType="dermoscopic"),
                                    ai_step("photo@1", imageType="macroscopic")))  # fmt: skip
    assert [s.image_types for s in flow.ai] == [("dermoscopic",), ("clinical",)]
    assert (DERMOSCOPY.type, OVERVIEW.type) == ("dermoscopic", "clinical")
    assert models_for(flow, ["derm@1", "photo@1"], DERMOSCOPY) == ["derm@1"]
    assert models_for(flow, ["derm@1", "photo@1"], OVERVIEW) == ["photo@1"]
    # a VL Photographic image of modality DMS (dermoscopy through a camera adapter) is dermoscopic
    assert models_for(flow, ["derm@1", "photo@1"], replace(OVERVIEW, modality="DMS")) == ["derm@1"]


def test_routing_by_sop_class_and_what_is_left_uncovered() -> None:
    flow = parse_flow(with_ai_steps(ai_step("derm@1", sopClass=DERMOSCOPIC_PHOTOGRAPHY)))
    assert models_for(flow, ["derm@1"], DERMOSCOPY) == ["derm@1"]
    assert models_for(flow, ["derm@1"], OVERVIEW) == []
    assert uncovered(flow, DERMOSCOPY) is None
    assert uncovered(flow, OVERVIEW) == "no AI model of this flow is for this image type (clinical image)"


@pytest.mark.parametrize(
    ("values", "words"),
    [({"imageType": "histology"}, "imageType is one of"), ({"sopClass": "1.2.840.x"}, "SOP Class UIDs")],
)
def test_an_image_type_the_router_cannot_tell_is_refused(values: dict[str, str], words: str) -> None:
    with pytest.raises(OperationOutcomeError) as refused:
        parse_flow(with_ai_steps(ai_step("derm@1", **values)))
    assert refused.value.status == 422 and words in str(refused.value.outcome)
