"""Issue 14, "Review queue": claims, declines and escalation, leases, eligibility, illegal moves, search."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from fhir_server.operation_definitions import canonical
from fhir_server.validation import validate
from fhir_server.workflow.review.codes import STATE_SYSTEM
from fhir_server.workflow.review.operations import return_lapsed
from fhir_server.workflow.review.policy import DERMATOLOGY
from tests.conftest import BASE, FhirTestClient
from tests.fhir_server.workflow.review_case import ReviewCase
from tests.schema import assert_r4


@pytest.fixture
def case(client: FhirTestClient) -> ReviewCase:
    return ReviewCase(client)


def state(task: dict[str, Any]) -> str:
    return next(c["code"] for c in task["businessStatus"]["coding"] if c["system"] == STATE_SYSTEM)


def test_open_review_is_idempotent_and_urgent_cases_are_due_first(case: ReviewCase) -> None:
    first, again = case.open(), case.open()
    assert first["id"] == again["id"] and first["status"] == "requested" and state(first) == "queued"
    assert first["priority"] == "asap" and first["focus"]["reference"] == f"DiagnosticReport/{case.case}"
    assert first["restriction"]["period"]["end"][:10] > first["authoredOn"][:10]
    routine = case.open(tier="gp", urgency="routine")
    assert routine["id"] != first["id"]
    assert routine["restriction"]["period"]["end"] > first["restriction"]["period"]["end"]  # 7 days, not 2
    raised = case.open(tier="gp", urgency="asap")  # the AI's suspicion came after a routine review was queued
    assert raised["id"] == routine["id"] and raised["priority"] == "asap" and raised["restriction"]["period"]["end"]
    assert case.open(tier="gp", urgency="routine")["priority"] == "asap"  # never lowered


def test_claim_then_three_declines_exhaust_the_tier_and_escalate(case: ReviewCase) -> None:
    case.set_policy({"tiers": {"dermatologist": {"specialties": [DERMATOLOGY], "escalate_to": "consultant"}}})
    task = case.open()["id"]
    reviewers = [case.reviewer(name) for name in ("Dr A", "Dr B", "Dr C")]
    for number, reviewer in enumerate(reviewers, 1):
        claimed = reviewer.op(task, "claim")
        assert claimed.status_code == 200, claimed.text
        assert (
            claimed.json()["status"] == "in-progress" and claimed.json()["owner"]["reference"] == reviewer.practitioner
        )
        declined = reviewer.op(task, "decline", ("reason", "outside-expertise"))
        assert declined.status_code == 200, declined.text
        expected = ("requested", "queued") if number < 3 else ("rejected", "tier-exhausted")
        assert (declined.json()["status"], state(declined.json())) == expected
    closed = reviewers[0].op(task, "claim")
    assert (
        closed.status_code == 409
        and "$claim: a review Task that is rejected" in closed.json()["issue"][0]["diagnostics"]
    )
    escalated = case.client.get(
        f"{BASE}/Task?focus=DiagnosticReport/{case.case}&code=urn:dermbridge:review-tier|consultant"
    )
    (consultant,) = [e["resource"] for e in escalated.json()["entry"]]
    assert consultant["status"] == "requested" and consultant["priority"] == "asap"
    assert "dermatologist exhausted" in consultant["reasonCode"]["text"]


def test_a_claim_is_exclusive_and_only_its_owner_releases_or_completes(case: ReviewCase) -> None:
    task = case.open()["id"]
    first, second = case.reviewer("Dr A"), case.reviewer("Dr B")
    assert first.op(task, "claim").status_code == 200
    taken = second.op(task, "claim")
    assert taken.status_code == 409 and first.practitioner in taken.json()["issue"][0]["diagnostics"]
    assert second.op(task, "release").status_code == 409
    assert second.op(task, "complete", ("decision", "confirm")).status_code == 409
    released = first.op(task, "release")
    assert released.status_code == 200 and released.json()["status"] == "requested" and "owner" not in released.json()
    assert first.op(task, "release").status_code == 409  # nothing to release any more
    assert second.op(task, "claim").status_code == 200


def test_a_lapsed_claim_returns_to_the_queue(case: ReviewCase) -> None:
    task = case.open()["id"]
    first, second = case.reviewer("Dr A"), case.reviewer("Dr B")
    assert first.op(task, "claim").status_code == 200
    case.lapse_claim(task)
    listed = second.get("Task/$worklist").json()
    assert [e["resource"]["id"] for e in listed["entry"]] == [task] and listed["entry"][0]["resource"][
        "status"
    ] == "requested"
    claimed = second.op(task, "claim")
    assert claimed.status_code == 200 and claimed.json()["owner"]["reference"] == second.practitioner


def test_an_expired_practitioner_role_cannot_claim(case: ReviewCase) -> None:
    task = case.open()["id"]
    expired = case.reviewer("Dr Lapsed", expires="2021-12-31")
    refused = expired.op(task, "claim")
    assert refused.status_code == 403
    assert "expired on 2021-12-31" in refused.json()["issue"][0]["diagnostics"]
    other = case.reviewer("Dr GP", specialty={"coding": [{"system": "http://snomed.info/sct", "code": "394814009"}]})
    assert other.op(task, "claim").status_code == 403
    assert other.get("Task/$worklist").json()["total"] == 0


def test_tokens_without_a_practitioner_cannot_claim(case: ReviewCase) -> None:
    task = case.open()["id"]
    system = case.client.post(f"{BASE}/Task/{task}/$claim", json={"resourceType": "Parameters"})
    assert system.status_code == 403 and "fhirUser" in system.json()["issue"][0]["diagnostics"]


def test_plain_writes_cannot_move_a_review_task(case: ReviewCase) -> None:
    task = case.open()
    changed = {**task, "status": "completed"}
    put = case.client.put(f"{BASE}/Task/{task['id']}", json=changed)
    assert put.status_code == 409 and "$claim" in put.json()["issue"][0]["diagnostics"]
    patch = [{"op": "replace", "path": "/status", "value": "in-progress"}]
    patched = case.client.patch(
        f"{BASE}/Task/{task['id']}", json=patch, headers={"Content-Type": "application/json-patch+json"}
    )
    assert patched.status_code == 409
    made = case.client.post(f"{BASE}/Task", json={k: v for k, v in task.items() if k not in ("id", "meta")})
    assert made.status_code == 409
    assert case.client.delete(f"{BASE}/Task/{task['id']}").status_code == 409
    unchanged = case.client.put(f"{BASE}/Task/{task['id']}", json=task)
    assert unchanged.status_code == 200  # writing it back as it is changes nothing


def test_plain_writes_cannot_reorder_hide_or_annotate_a_review_task(case: ReviewCase) -> None:
    """Pentest 3, finding 4: a plain write dropped ``priority`` (the Task left every worklist), moved the due
    date, or replaced the note history under another reviewer's name. The review code alone is managed too."""
    task = case.open()
    hidden = {k: v for k, v in task.items() if k != "priority"}
    note = [{"authorString": "Dr Bob Roberts", "text": "benign, no hurry"}]
    for changed in (
        hidden,
        {**task, "priority": "routine"},
        {**task, "note": note},
        {**task, "description": "x"},
        {**task, "restriction": {"period": {"end": "2027-12-31"}}},
        {**task, "authoredOn": "2030-01-01"},
    ):
        put = case.client.put(f"{BASE}/Task/{task['id']}", json=changed)
        assert put.status_code == 409 and "$claim" in put.json()["issue"][0]["diagnostics"], put.text
    untiered = {"resourceType": "Task", "status": "requested", "intent": "order",
                "code": {"coding": [{"system": "urn:dermbridge:task", "code": "clinician-review"}]}}  # fmt: skip
    assert case.client.post(f"{BASE}/Task", json=untiered).status_code == 409
    assert case.reviewer("Dr Q").get("Task/$worklist").json()["entry"][0]["resource"]["id"] == task["id"]


def test_the_worklist_tier_is_bounded_and_never_echoed(case: ReviewCase) -> None:
    """Pentest 3, finding 9: a 5,000-character ``tier`` came back whole in the 403's diagnostics."""
    reviewer = case.reviewer("Dr T")
    for tier in ("x" * 5000, "Not A Tier", "a" * 65):
        refused = reviewer.get(f"Task/$worklist?tier={tier}")
        assert refused.status_code == 400 and tier not in refused.text, refused.text[:300]


def test_the_queue_is_searchable_by_status_priority_owner_and_tier(case: ReviewCase) -> None:
    urgent = case.open()["id"]
    routine = case.open(tier="dermatology-routine", urgency="routine")["id"]
    reviewer = case.reviewer("Dr A")
    assert reviewer.op(urgent, "claim").status_code == 200

    def ids(query: str) -> set[str]:
        response = case.client.get(f"{BASE}/Task?{query}")
        assert response.status_code == 200, response.text
        return {e["resource"]["id"] for e in response.json().get("entry", [])}

    assert ids("status=requested&code=urn:dermbridge:task|clinician-review") == {routine}
    assert ids(f"owner={reviewer.practitioner}") == {urgent}
    assert ids("priority=asap") == {urgent}
    assert ids("code=urn:dermbridge:review-tier|dermatology-routine") == {routine}
    assert ids("business-status=urn:dermbridge:review-state|claimed") == {urgent}
    assert ids(f"focus=DiagnosticReport/{case.case}&performer=urn:dermbridge:review-tier|dermatologist") == {urgent}


def test_the_worklist_puts_the_most_urgent_first_then_the_oldest(case: ReviewCase) -> None:
    routine = case.open(urgency="routine")["id"]
    later = ReviewCase(case.client)
    asap = later.open(urgency="asap")["id"]
    urgent = ReviewCase(case.client).open(urgency="urgent")["id"]
    asap_too = ReviewCase(case.client).open(urgency="asap")["id"]
    reviewer = case.reviewer("Dr A")
    listed = reviewer.get("Task/$worklist").json()
    assert [e["resource"]["id"] for e in listed["entry"]] == [asap, asap_too, urgent, routine]
    assert reviewer.op(asap, "decline", ("reason", "conflict-of-interest")).status_code == 200
    again = reviewer.get("Task/$worklist?_count=2").json()  # what they declined is not offered to them again
    assert [e["resource"]["id"] for e in again["entry"]] == [asap_too, urgent] and again["total"] == 3


def test_the_operations_declare_valid_definitions_in_the_capability_statement(client: FhirTestClient) -> None:
    operations = client.app.state.fhir_http.router.operations  # type: ignore[attr-defined]
    task = next(r for r in client.get(f"{BASE}/metadata").json()["rest"][0]["resource"] if r["type"] == "Task")
    for name in ("claim", "release", "decline", "complete", "worklist"):
        definition = operations[name].definition
        validate(definition, "OperationDefinition")
        assert_r4(definition)
        assert {"name": name, "definition": canonical(definition)} in task["operation"]


def test_a_sweep_returns_lapsed_claims_once_however_many_processes_run_it(case: ReviewCase) -> None:
    task = case.open()["id"]
    reviewer = case.reviewer("Dr A")
    assert reviewer.op(task, "claim").status_code == 200
    now = datetime.now(UTC)
    assert case.client.portal.call(return_lapsed, case.system(), now) == 0  # the lease still runs
    case.lapse_claim(task)
    assert case.client.portal.call(return_lapsed, case.system(), now) == 1
    assert case.client.portal.call(return_lapsed, case.system(), now) == 0
    swept = case.client.get(f"{BASE}/Task/{task}").json()
    assert swept["status"] == "requested" and "owner" not in swept and "lapsed" in swept["note"][-1]["text"]
