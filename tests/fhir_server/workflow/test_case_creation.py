"""Issue 14: a case the EHR creates through FHIR (naming its product) starts its flow at creation, not with its
first image; the image that joins it later (by accession, C-STOREd with pynetdicom) finds the flow started
and writes nothing twice, nor does a redelivered creation event."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_server.storage.port import OutboxEvent
from fhir_server.workflow.events import RESOURCE_CREATED
from tests.factories import diagnostic_report
from tests.fhir_server.workflow.conftest import (
    BASE,
    CASE_TASK,
    REVIEW,
    Node,
    consenting_patient,
    lesion_instance,
    wait_for,
)
from tests.fhir_server.workflow.test_engine import deliver, store_of
from tests.fhir_server.workflow.test_flows import AI_STEP, SUSPICIOUS_SEED, steps

pytestmark = pytest.mark.interop
SKIN_CANCER = {"system": "urn:dermbridge:product", "code": "skin-cancer"}


def ehr_case(node: Node, patient: str, accession: str) -> str:
    """The EHR opens the case: a DiagnosticReport naming its product and the order's accession, no image yet."""
    body = diagnostic_report(f"Patient/{patient}", meta={"tag": [SKIN_CANCER]},
                             identifier=[{"system": "urn:dermbridge:accession", "value": accession}])  # fmt: skip
    created = node.client.post(f"{BASE}/DiagnosticReport", json=body)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def creation_events(node: Node, report: str, probe: str) -> list[OutboxEvent]:
    events = node.client.portal.call(store_of(node).claim_events, probe, 10_000, 600)
    return [e for e in events if e.topic == RESOURCE_CREATED and e.payload.get("id") == report]


def root_of(node: Node, report: str) -> dict[str, Any]:
    return wait_for(node.client, "Task", {"code": CASE_TASK, "focus": f"DiagnosticReport/{report}"})[0]


def test_human_only_opens_the_review_when_the_ehr_creates_the_case(node: Node) -> None:
    node.activate("human-only")
    patient = consenting_patient(node.client, "NEW-HU")
    report = ehr_case(node, patient, "NEW-HU")
    focus = f"DiagnosticReport/{report}"
    review = wait_for(node.client, "Task", {"code": REVIEW, "focus": focus})[0]  # before any image
    assert review["status"] == "requested"
    root = root_of(node, report)
    assert root["instantiatesCanonical"] == "urn:dermbridge:workflow:human-only|1"

    node.store(lesion_instance("NEW-HU", seed=SUSPICIOUS_SEED, accession="NEW-HU"))  # joins the case by accession
    root = node.until(f"Task/{root['id']}", lambda task: "input" in task)  # the image event was handled
    assert node.get(f"DiagnosticReport/{report}")["media"]
    assert deliver(node, node.client.app.state.workflow, creation_events(node, report, "probe-created-hu") * 2)  # type: ignore[attr-defined]
    assert node.total("Task", code=REVIEW, focus=focus) == 1  # the image and the redelivery: the same review
    assert node.total("Task", code=CASE_TASK, focus=focus) == 1
    tree = steps(node, root)
    assert set(tree) == {"human-review"}
    assert tree["human-review"]["output"] == [{"type": {"text": "review"},
                                              "valueReference": {"reference": f"Task/{review['id']}"}}]  # fmt: skip


def test_a_flow_with_ai_waits_for_the_images_of_the_ehr_s_case(node: Node) -> None:
    node.activate("ai-then-signoff")
    patient = consenting_patient(node.client, "NEW-AI")
    report = ehr_case(node, patient, "NEW-AI")
    root = root_of(node, report)
    root = node.until(f"Task/{root['id']}", lambda task: task["businessStatus"]["text"] == "awaiting images")
    focus = f"DiagnosticReport/{report}"
    assert node.total("Task", code=REVIEW, focus=focus) == 0 and node.total("Task", code=AI_STEP, focus=focus) == 0

    node.store(lesion_instance("NEW-AI", seed=SUSPICIOUS_SEED, accession="NEW-AI"))
    waiting = wait_for(node.client, "Task", {"code": AI_STEP, "focus": focus})[0]
    assert waiting["businessStatus"]["text"] == "awaiting findings"
    assert node.get(f"Task/{root['id']}")["businessStatus"]["text"] == "started"


def test_reports_that_are_not_new_cases_start_nothing(node: Node) -> None:
    patient = consenting_patient(node.client, "NEW-NO")
    untagged = node.client.post(f"{BASE}/DiagnosticReport", json=diagnostic_report(f"Patient/{patient}"))
    cancelled = node.client.post(f"{BASE}/DiagnosticReport", json=diagnostic_report(
        f"Patient/{patient}", status="cancelled", meta={"tag": [SKIN_CANCER]}))  # fmt: skip
    marker = ehr_case(node, patient, "NEW-NO")  # created last: once its flow started, the others were seen
    root_of(node, marker)
    assert untagged.status_code == cancelled.status_code == 201, cancelled.text
    for report in (untagged.json()["id"], cancelled.json()["id"]):
        assert node.total("Task", code=CASE_TASK, focus=f"DiagnosticReport/{report}") == 0
