"""The four shipped flows end to end (issue 14): pynetdicom C-STOREs a dermoscopic image into the running
server; the workflow engine (a background outbox consumer) and the inference worker (driven by hand) take
it through the tenant's active definition. The definition is switched between tests through the FHIR API,
in the same running server: a new definition takes effect without a restart."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fhir_server.workflow.conftest import CASE_TASK, REVIEW, Node, consenting_patient, lesion_instance, wait_for

pytestmark = pytest.mark.interop
AI_STEP = "urn:dermbridge:workflow-step|ai-analysis"
BENIGN_SEED, SUSPICIOUS_SEED = 26, 28  # the demo model: nevus 1.00; melanoma 0.99


def steps(node: Node, root: dict[str, Any]) -> dict[str, dict[str, Any]]:
    bundle = node.get("Task", **{"part-of": f"Task/{root['id']}"})
    return {e["resource"]["code"]["coding"][0]["code"]: e["resource"] for e in bundle.get("entry", [])}


def test_ai_only_with_a_demo_model_escalates_a_benign_result_to_review(node: Node) -> None:
    node.activate("ai-only")
    patient = consenting_patient(node.client, "FLOW-AI")
    node.store(lesion_instance("FLOW-AI", seed=BENIGN_SEED, suspicious=False, accession="FLOW-AI"))
    report, root = node.case(patient)
    assert root["instantiatesCanonical"] == "urn:dermbridge:workflow:ai-only|1"
    wait_for(node.client, "Task", {"code": AI_STEP, "focus": f"DiagnosticReport/{report['id']}"})
    assert node.total("Task", code=REVIEW, focus=f"DiagnosticReport/{report['id']}") == 0  # nothing before the AI
    assert node.analyse() >= 1
    review = wait_for(node.client, "Task", {"code": REVIEW, "focus": f"DiagnosticReport/{report['id']}"})[0]
    assert review["status"] == "requested" and review["priority"] == "routine"
    # a confident benign call, but the demo card does not allow clinical use: a human reads it
    tree = steps(node, root)
    assert "does not allow clinical use" in str(tree["human-review"]["businessStatus"])
    assert "autonomous-discharge" not in tree
    assert tree["escalation"]["businessStatus"] == {"text": "escalated"}
    assert node.get(f"Task/{root['id']}")["status"] == "in-progress"


def test_human_only_opens_review_without_ai(node: Node) -> None:
    node.activate("human-only")
    patient = consenting_patient(node.client, "FLOW-HU")
    node.store(lesion_instance("FLOW-HU", seed=SUSPICIOUS_SEED, accession="FLOW-HU"))
    report, root = node.case(patient)
    review = wait_for(node.client, "Task", {"code": REVIEW, "focus": f"DiagnosticReport/{report['id']}"})[0]
    assert review["status"] == "requested"
    node.analyse()
    assert node.total("Observation", subject=f"Patient/{patient}") == 0  # the worker ran no model
    assert set(steps(node, root)) == {"human-review"}
    assert root["instantiatesCanonical"] == "urn:dermbridge:workflow:human-only|1"


def test_ai_then_sign_off_opens_an_urgent_review_after_the_findings(node: Node) -> None:
    node.activate("ai-then-signoff")
    patient = consenting_patient(node.client, "FLOW-SO")
    node.store(lesion_instance("FLOW-SO", seed=SUSPICIOUS_SEED, accession="FLOW-SO"))
    report, root = node.case(patient)
    focus = f"DiagnosticReport/{report['id']}"
    waiting = wait_for(node.client, "Task", {"code": AI_STEP, "focus": focus})[0]
    assert waiting["businessStatus"]["text"] == "awaiting findings"
    assert node.total("Task", code=REVIEW, focus=focus) == 0  # sign-off comes after the findings
    node.analyse()
    assert node.total("Observation", subject=f"Patient/{patient}") >= 2
    review = wait_for(node.client, "Task", {"code": REVIEW, "focus": focus})[0]
    assert review["priority"] == "asap"  # melanoma probability 0.99 >= 0.3: the 2-week wait
    tree = steps(node, root)
    assert tree["consent-gate"]["businessStatus"] == {"text": "passed"}
    assert tree["ai-analysis"]["status"] == "completed"
    assert str(tree["human-review"]["businessStatus"]["text"]).startswith("asap review opened: escalated")
    assert tree["human-review"]["output"][0]["valueReference"]["reference"] == f"Task/{review['id']}"


def test_store_only_runs_nothing_after_storage(node: Node) -> None:
    node.activate("store-only")
    patient = consenting_patient(node.client, "FLOW-ST")
    node.store(lesion_instance("FLOW-ST", seed=SUSPICIOUS_SEED, accession="FLOW-ST"))
    report, _ = node.case(patient)
    root = wait_for(node.client, "Task", {"code": CASE_TASK, "focus": f"DiagnosticReport/{report['id']}",
                                          "status": "completed"})[0]  # fmt: skip
    assert root["businessStatus"]["text"] == "stored"
    node.analyse()
    assert node.total("Observation", subject=f"Patient/{patient}") == 0
    assert node.total("Task", code=REVIEW, focus=f"DiagnosticReport/{report['id']}") == 0
    assert set(steps(node, root)) == {"store-only"}


def test_a_tenant_definition_with_its_own_tier_applies_to_the_next_case(node: Node) -> None:
    first = node.activate("human-only")
    tier = {"path": "tier", "expression": {"language": "text/fhirpath", "expression": "'skin-cancer-clinic'"}}
    review = {"code": [{"coding": [{"system": "urn:dermbridge:workflow-step", "code": "human-review"}]}],
              "dynamicValue": [tier]}  # fmt: skip
    second = node.activate("human-only", version="2", action=[review])
    assert node.get(f"PlanDefinition/{first['id']}")["status"] == "retired"  # one active per product
    patient = consenting_patient(node.client, "FLOW-T2")
    node.store(lesion_instance("FLOW-T2", seed=BENIGN_SEED, accession="FLOW-T2"))
    report, root = node.case(patient)
    assert root["instantiatesCanonical"] == f"urn:dermbridge:workflow:human-only|{second['version']}"
    review = wait_for(node.client, "Task", {"code": "urn:dermbridge:review-tier|skin-cancer-clinic"})[0]
    assert review["focus"]["reference"] == f"DiagnosticReport/{report['id']}"
