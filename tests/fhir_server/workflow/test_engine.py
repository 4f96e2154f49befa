"""The workflow engine's guarantees (issue 14): the shipped default when a tenant has no definition, a
refused case when nothing applies, the consent gate's fail branch, one Task tree however often an event
comes or a delivery dies half-way, and the interventions on a running case."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_server.repository import Repository
from fhir_server.storage.port import OutboxEvent
from fhir_server.tenant_settings import write_setting
from fhir_server.workflow.engine import WorkflowEngine
from fhir_server.workflow.escalation import Verdict
from fhir_server.workflow.events import FINDINGS_COMMITTED, NOTIFICATION, TOPICS, ClassScore, FindingsCommitted
from fhir_server.workflow.library import PRODUCT_SETTING
from tests.fhir_server.workflow.conftest import CASE_TASK, REVIEW, Node, consenting_patient, lesion_instance, wait_for
from tests.fhir_server.workflow.test_flows import AI_STEP, BENIGN_SEED, SUSPICIOUS_SEED, steps

pytestmark = pytest.mark.interop


class Killed(BaseException):
    """The process dies: nothing in the engine or the dispatcher catches it."""


class DiesOpeningReview(WorkflowEngine):
    async def _review(self, case: Any, verdict: Verdict) -> None:
        await super()._review(case, verdict)
        raise Killed


def store_of(node: Node) -> Any:
    return node.client.portal.call(node.client.app.state.engine.tenant, "default")  # type: ignore[attr-defined]


def events_of(node: Node, report_id: str, probe: str) -> list[OutboxEvent]:
    """Every event of the case so far, read by a consumer of its own (the others' deliveries are untouched)."""
    events = node.client.portal.call(store_of(node).claim_events, probe, 10_000, 600)
    return [e for e in events if e.payload.get("report") == report_id]


def deliver(node: Node, engine: WorkflowEngine, events: list[OutboxEvent]) -> bool:
    """Hand the events to ``engine``; False when it died on one (the kill stops here, not in the test's loop)."""

    async def run() -> bool:
        try:
            for event in events:
                if event.topic in TOPICS:
                    await engine.handle("default", event)
        except Killed:
            return False
        return True

    return bool(node.client.portal.call(run))


def test_no_tenant_definition_runs_the_shipped_default_and_a_refused_consent_goes_to_review(node: Node) -> None:
    patient = consenting_patient(node.client, "ENG-NC", permit=False)
    node.store(lesion_instance("ENG-NC", seed=SUSPICIOUS_SEED, accession="ENG-NC"))
    report, root = node.case(patient)
    assert root["instantiatesCanonical"] == "urn:dermbridge:workflow:ai-then-signoff|1"
    review = wait_for(node.client, "Task", {"code": REVIEW, "focus": f"DiagnosticReport/{report['id']}"})[0]
    assert review["priority"] == "routine"
    tree = steps(node, root)
    assert tree["consent-gate"]["businessStatus"]["text"].startswith("failed")
    assert tree["ai-analysis"]["status"] == "cancelled"
    node.analyse()
    assert node.total("Observation", subject=f"Patient/{patient}") == 0


def test_a_case_with_no_applicable_definition_is_refused_and_nothing_runs(node: Node) -> None:
    node.client.portal.call(write_setting, store_of(node), PRODUCT_SETTING, "non-cancer")
    try:
        patient = consenting_patient(node.client, "ENG-NO")
        node.store(lesion_instance("ENG-NO", seed=SUSPICIOUS_SEED, accession="ENG-NO"))
        report = wait_for(node.client, "DiagnosticReport", {"subject": f"Patient/{patient}"})[0]
        focus = f"DiagnosticReport/{report['id']}"
        root = wait_for(node.client, "Task", {"code": CASE_TASK, "focus": focus, "status": "rejected"})[0]
        outcome = root["contained"][0]
        assert outcome["resourceType"] == "OperationOutcome"
        assert "no active workflow definition for product 'non-cancer'" in outcome["issue"][0]["diagnostics"]
        assert root["output"][0]["valueReference"]["reference"] == "#refusal"
        node.analyse()
        assert node.total("Observation", subject=f"Patient/{patient}") == 0  # the AI did not run either
        assert node.total("Task", code=REVIEW, focus=focus) == 0
    finally:
        node.client.portal.call(write_setting, store_of(node), PRODUCT_SETTING, None)


def test_a_delivery_that_dies_and_redeliveries_leave_one_task_tree(node: Node) -> None:
    dispatcher = node.client.app.state.dispatcher  # type: ignore[attr-defined]
    node.client.portal.call(dispatcher.stop)  # the engine's events wait for the dying engine first
    try:
        patient = consenting_patient(node.client, "ENG-KILL")
        node.store(lesion_instance("ENG-KILL", seed=SUSPICIOUS_SEED, accession="ENG-KILL"))
        assert node.analyse() >= 1  # the findings and their event are committed
        report = wait_for(node.client, "DiagnosticReport", {"subject": f"Patient/{patient}"})[0]
        focus = f"DiagnosticReport/{report['id']}"
        dying = DiesOpeningReview(node.client.app.state.engine, node.client.app.state.workflow.library)  # type: ignore[attr-defined]
        assert not deliver(node, dying, events_of(node, report["id"], "probe-kill"))
        assert node.total("Task", code=REVIEW, focus=focus) == 0  # the dying delivery's commit never happened
        assert wait_for(node.client, "Task", {"code": AI_STEP, "focus": focus})[0]["status"] == "in-progress"
    finally:
        node.client.portal.call(dispatcher.start)  # redelivers every event of the case
    wait_for(node.client, "Task", {"code": REVIEW, "focus": focus})
    root = wait_for(node.client, "Task", {"code": CASE_TASK, "focus": focus, "_count": "5"})[0]
    wait_for(node.client, "Task", {"part-of": f"Task/{root['id']}"}, 4)  # consent, AI, escalation, review
    before = node.get("Task", focus=focus, _total="accurate")
    version = node.get(f"Task/{root['id']}")["meta"]["versionId"]
    notified = [e for e in events_of(node, report["id"], "probe-notify") if e.topic == NOTIFICATION]
    assert deliver(node, node.client.app.state.workflow, events_of(node, report["id"], "probe-replay") * 2)  # type: ignore[attr-defined]
    after = node.get("Task", focus=focus, _total="accurate")
    assert after["total"] == before["total"] == 6  # root, consent, AI, escalation, review step, review Task
    assert node.total("Task", code=REVIEW, focus=focus) == 1
    assert node.get(f"Task/{root['id']}")["meta"]["versionId"] == version  # nothing rewritten
    again = [e for e in events_of(node, report["id"], "probe-notify-2") if e.topic == NOTIFICATION]
    assert len(again) == len(notified) == 2  # review-opened, escalated: once each


def test_halt_keeps_events_and_resume_runs_them_with_who_and_why(node: Node) -> None:
    patient = consenting_patient(node.client, "ENG-HALT")
    node.store(lesion_instance("ENG-HALT", seed=SUSPICIOUS_SEED, accession="ENG-HALT"))
    report, root = node.case(patient)
    focus = f"DiagnosticReport/{report['id']}"
    wait_for(node.client, "Task", {"code": AI_STEP, "focus": focus})
    reason = {"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "image re-take pending"}]}
    halted = node.client.post(f"{BASE}/Task/{root['id']}/$halt", json=reason)
    assert halted.status_code == 200, halted.text
    assert halted.json()["status"] == "on-hold"
    assert node.client.post(f"{BASE}/Task/{root['id']}/$halt", json=reason).status_code == 409
    node.analyse()
    held = node.until(f"Task/{root['id']}", lambda t: "deferred-event" in str(t.get("input")))
    assert held["status"] == "on-hold"
    assert node.total("Task", code=REVIEW, focus=focus) == 0  # the findings wait while the case is halted
    resumed = node.client.post(f"{BASE}/Task/{root['id']}/$resume", json={**reason, "parameter": [
        {"name": "reason", "valueString": "re-take not needed"}]})  # fmt: skip
    assert resumed.status_code == 200 and resumed.json()["status"] == "in-progress"
    wait_for(node.client, "Task", {"code": REVIEW, "focus": focus})
    notes = node.get(f"Task/{root['id']}")["note"]
    assert [n["text"] for n in notes] == ["halt: image re-take pending", "resume: re-take not needed"]
    assert all(n["authorString"] for n in notes)  # the caller's client id


def test_cancel_and_retry_need_a_reason_and_a_running_case(node: Node) -> None:
    patient = consenting_patient(node.client, "ENG-CAN")
    node.store(lesion_instance("ENG-CAN", seed=SUSPICIOUS_SEED, accession="ENG-CAN"))
    _, root = node.case(patient)
    url = f"{BASE}/Task/{root['id']}"
    assert node.client.post(f"{url}/$cancel", json={"resourceType": "Parameters"}).status_code == 400
    retry = {"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "worker restarted"},
                                                         {"name": "step", "valueCode": "ai-analysis"}]}  # fmt: skip
    wait_for(node.client, "Task", {"code": AI_STEP, "focus": root["focus"]["reference"]})
    retried = node.client.post(f"{url}/$retry", json=retry)
    assert retried.status_code == 200, retried.text
    cancel = {"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "duplicate referral"}]}
    cancelled = node.client.post(f"{url}/$cancel", json=cancel)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert node.client.post(f"{url}/$cancel", json=cancel).status_code == 409
    assert node.client.post(f"{url}/$retry", json=retry).status_code == 409
    node.analyse()
    assert node.total("Task", code=REVIEW, focus=root["focus"]["reference"]) == 0  # a cancelled case runs nothing
    step = node.get("Task", code=AI_STEP, focus=root["focus"]["reference"])["entry"][0]["resource"]
    assert step["status"] == "cancelled"


def test_autonomous_discharge_only_with_a_card_cleared_for_clinical_use(node: Node) -> None:
    """The shipped demo model is not cleared, so this delivers the event a cleared model's findings would
    append (``ai.findings-committed``, clinical_use true) to the engine directly."""
    node.activate("ai-only")
    patient = consenting_patient(node.client, "ENG-DIS")
    node.store(lesion_instance("ENG-DIS", seed=BENIGN_SEED, suspicious=False, accession="ENG-DIS"))
    report, root = node.case(patient)
    wait_for(node.client, "Task", {"code": AI_STEP, "focus": f"DiagnosticReport/{report['id']}"})
    nevus = ClassScore("400096001", "Melanocytic nevus", "benign", 0.97, False)
    melanoma = ClassScore("93655004", "Malignant melanoma of skin", "melanoma", 0.03, True)
    findings = FindingsCommitted(report["id"], patient, "1.2.3", "cleared@1", True, (nevus, melanoma), "400096001",
                                 False, routed=("cleared@1",))  # fmt: skip

    async def run() -> None:
        store = await node.client.app.state.engine.tenant("default")  # type: ignore[attr-defined]
        async with store.transaction() as tx:
            repo = Repository.system(store, reason="test", tx=tx)
            await node.client.app.state.workflow.run(repo, FINDINGS_COMMITTED, findings.payload())  # type: ignore[attr-defined]

    node.client.portal.call(run)
    done = node.get(f"Task/{root['id']}")
    assert done["status"] == "completed" and done["businessStatus"]["text"] == "discharged by the AI"
    tree = steps(node, root)
    assert tree["autonomous-discharge"]["businessStatus"]["text"].startswith("discharged by the AI: Melanocytic")
    assert "human-review" not in tree
    assert node.total("Task", code=REVIEW, focus=f"DiagnosticReport/{report['id']}") == 0


BASE = "/fhir/default"


def test_workflow_tasks_are_written_by_the_workflow_only(node: Node) -> None:
    """Pentest 3, findings 1 and 4: a client could add a forged event to a root Task's ``input`` (re-emitted by
    ``$retry``/``$resume``), make a "root" Task of its own, or cancel and delete a case's tree."""
    patient = consenting_patient(node.client, "ENG-GUARD")
    node.store(lesion_instance("ENG-GUARD", seed=SUSPICIOUS_SEED, accession="ENG-GUARD"))
    _, root = node.case(patient)
    url = f"{BASE}/Task/{root['id']}"
    forged = {"type": {"text": "image-event"}, "valueString": '{"patient": "someone-else"}'}
    put = node.client.put(url, json={**root, "input": [*root.get("input", []), forged]})
    assert put.status_code == 409 and "$resume" in put.json()["issue"][0]["diagnostics"]
    assert node.client.put(url, json={**root, "status": "cancelled"}).status_code == 409
    patch = [{"op": "replace", "path": "/status", "value": "cancelled"}]
    headers = {"Content-Type": "application/json-patch+json"}
    assert node.client.patch(url, json=patch, headers=headers).status_code == 409
    assert node.client.delete(url).status_code == 409
    made = {k: v for k, v in root.items() if k not in ("id", "meta", "identifier")}
    assert node.client.post(f"{BASE}/Task", json={**made, "status": "on-hold"}).status_code == 409
    entry = {"resource": {**root, "status": "cancelled"}, "request": {"method": "PUT", "url": f"Task/{root['id']}"}}
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [entry]}
    assert node.client.post(BASE, json=bundle).status_code == 409
    halt = {"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "guard test"}]}
    halted = node.client.post(f"{url}/$halt", json=halt)  # the operations still write it
    assert halted.status_code == 200 and halted.json()["status"] == "on-hold", halted.text
    other = node.client.post(f"{BASE}/Task", json={"resourceType": "Task", "status": "requested", "intent": "order"})
    assert other.status_code == 201  # a plain Task stays a client's
