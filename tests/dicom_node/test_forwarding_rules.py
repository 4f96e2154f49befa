"""The tenant's forwarding configuration (``dicom_node.forwarding.config``): what a rule matches, and what a
wrong configuration is told (422 naming the element), before anything is stored."""

from __future__ import annotations

from typing import Any

import pytest

from dicom_node.forwarding.config import Candidate, parse_forwarding
from dicom_node.forwarding.events import AI_RESULTS, CLINICIAN_DECISIONS, IMAGES
from dicom_node.sop_classes import COMPREHENSIVE_3D_SR
from fhir_server.errors import OperationOutcomeError

DERMOSCOPIC = "1.2.840.10008.5.1.4.1.1.77.1.4"
KOS = "1.2.840.10008.5.1.4.1.1.88.59"
PACS = {"aeTitle": "PACS", "host": "10.0.0.5", "port": 104}
ONCO = {"aeTitle": "ONCO", "host": "onco.example", "port": 11112}


def _config(*rules: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"destinations": {"pacs": PACS, "onco": ONCO}, "rules": list(rules), **extra}


def _targets(config: dict[str, Any], candidate: Candidate, outcome_rules_only: bool = False) -> list[str]:
    forwarding = parse_forwarding(config)
    return [d.name for d in forwarding.targets(candidate, outcome_rules_only=outcome_rules_only)]


def test_each_condition_of_a_rule_must_hold() -> None:
    config = _config(
        {"destination": "pacs"},
        {"destination": "onco", "objects": ["images", "ai-results"], "outcomes": ["malignant", "indeterminate"],
         "callingAE": "DERMATOSCOPE1"},
        {"destination": "onco", "sopClasses": [KOS]},
    )  # fmt: skip
    image = Candidate(IMAGES, DERMOSCOPIC, "DERMATOSCOPE1", None)
    assert _targets(config, image) == ["pacs"]  # the outcome is not known when the image is stored
    melanoma = Candidate(AI_RESULTS, COMPREHENSIVE_3D_SR, "DERMATOSCOPE1", "melanoma")
    assert _targets(config, melanoma) == ["pacs", "onco"]  # any malignant tier is "malignant"
    assert _targets(config, Candidate(AI_RESULTS, COMPREHENSIVE_3D_SR, "WARD-CAM", "melanoma")) == ["pacs"]
    assert _targets(config, Candidate(AI_RESULTS, COMPREHENSIVE_3D_SR, "DERMATOSCOPE1", "benign")) == ["pacs"]
    assert _targets(config, Candidate(AI_RESULTS, COMPREHENSIVE_3D_SR, "DERMATOSCOPE1", "pre-malignant")) == ["pacs"]
    # the image met again with the AI's outcome: only the rules naming outcomes (the others sent it already)
    assert _targets(config, Candidate(IMAGES, DERMOSCOPIC, "DERMATOSCOPE1", "indeterminate"), True) == ["onco"]
    # a clinician's decision: by its kind, or by its SOP class (a Key Object Selection)
    assert _targets(config, Candidate(CLINICIAN_DECISIONS, KOS, None, None)) == ["pacs", "onco"]


def test_objects_narrow_a_rule_to_kinds() -> None:
    config = _config({"destination": "onco", "objects": ["clinician-decisions"]})
    assert _targets(config, Candidate(IMAGES, DERMOSCOPIC, None, None)) == []
    assert _targets(config, Candidate(CLINICIAN_DECISIONS, COMPREHENSIVE_3D_SR, None, None)) == ["onco"]


def test_back_off_doubles_up_to_half_an_hour() -> None:
    forwarding = parse_forwarding(_config({"destination": "pacs"}, retrySeconds=10, maxAttempts=20))
    assert [forwarding.backoff(n) for n in (1, 2, 3)] == [10, 20, 40]
    assert forwarding.backoff(15) == 1800


@pytest.mark.parametrize(
    ("config", "expression"),
    [
        (_config({"destination": "nowhere"}), "rules[0].destination"),
        (_config({"destination": "pacs", "objects": ["videos"]}), "rules[0].objects"),
        (_config({"destination": "pacs", "sopClasses": ["1.2.x"]}), "rules[0].sopClasses[0]"),
        (_config({"destination": "pacs", "callingAE": "A" * 17}), "rules[0].callingAE"),
        (_config({"destination": "pacs", "outcomes": []}), "rules[0].outcomes"),
        (_config({"destination": "pacs", "colour": "red"}), "rules[0]"),
        ({"destinations": {"pacs": {**PACS, "port": 70000}}}, "destinations.pacs.port"),
        ({"destinations": {"pacs": {**PACS, "aeTitle": "BACK\\SLASH"}}}, "destinations.pacs.aeTitle"),
        ({"destinations": {"Bad Name": PACS}}, "destinations.Bad Name"),
        ({"destinations": {"pacs": {**PACS, "timeoutSeconds": 0}}}, "destinations.pacs.timeoutSeconds"),
        (_config(maxAttempts=0), "maxAttempts"),
        (_config(retrySeconds=0.01), "retrySeconds"),
    ],
)
def test_a_wrong_configuration_is_refused_naming_the_element(config: dict[str, Any], expression: str) -> None:
    with pytest.raises(OperationOutcomeError) as refused:
        parse_forwarding(config)
    assert refused.value.status == 422
    assert refused.value.outcome["issue"][0]["expression"] == [expression]
