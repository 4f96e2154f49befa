"""Topic-based Subscriptions (Subscriptions Backport IG) at activation and on the email channel, the topics in
the CapabilityStatement, and the reviewer emails' retries. The workflow's own cases are driven end to end in
tests/fhir_server/workflow/test_notifications.py; here a ``workflow.notification`` is appended as the engine
appends it (the typed event, in a transaction)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fhir_server.subscriptions.status import STATUS_DEFINITION
from fhir_server.subscriptions.topics import CATALOGUE, FILTER_CRITERIA, PAYLOAD_CONTENT, TOPIC_CANONICAL
from fhir_server.validation import validate
from fhir_server.workflow.events import NOTIFICATION, SIGNED_OFF, Notification
from tests.conftest import BASE, FhirTestClient, make_client
from tests.factories import diagnostic_report, patient
from tests.fhir_server.security.smart import IdentityProvider
from tests.fhir_server.subscriptions.endpoints import hook_server, smtp_server, wait_for
from tests.fhir_server.workflow.review_case import DERMATOLOGY, ReviewCase
from tests.schema import assert_r4
from tests.server import free_port

FAST: dict[str, Any] = {
    "subscription_retry_seconds": 0.05,
    "subscription_poll_seconds": 0.05,
    "subscription_max_attempts": 3,
    "subscription_allowed_hosts": ["127.0.0.1"],
}
HOOK = "http://127.0.0.1:9/hooks"  # allow-listed (FAST); never called here


def topic_subscription(topic: str, *, filters: tuple[str, ...] = (), content: str | None = None,
                       channel: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    body: dict[str, Any] = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "test",
        "criteria": f"urn:dermbridge:topic:{topic}",
        "channel": channel or {"type": "rest-hook", "endpoint": HOOK, "payload": "application/fhir+json"},
    }
    if filters:
        body["_criteria"] = {"extension": [{"url": FILTER_CRITERIA, "valueString": f} for f in filters]}
    if content:
        body["channel"]["_payload"] = {"extension": [{"url": PAYLOAD_CONTENT, "valueCode": content}]}
    return body


@pytest.fixture
def fhir(tmp_path: Path) -> Iterator[FhirTestClient]:
    with make_client(tmp_path / "var", **FAST) as client:
        yield client


def test_the_capability_statement_lists_the_topics(fhir: FhirTestClient) -> None:
    statement = fhir.get(f"{BASE}/metadata").json()
    entry = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Subscription")
    advertised = [e["valueCanonical"] for e in entry["extension"] if e["url"] == TOPIC_CANONICAL]
    assert advertised == [t.canonical for t in CATALOGUE]
    assert "urn:dermbridge:topic:urgent-finding" in advertised and "urn:dermbridge:topic:case-finalised" in advertised
    validate(STATUS_DEFINITION, "OperationDefinition")
    assert_r4(STATUS_DEFINITION)
    assert {"name": "status", "definition": STATUS_DEFINITION["url"]} in entry["operation"]


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (topic_subscription("no-such-topic"), 422, "unknown topic"),
        (topic_subscription("urgent-finding", filters=("Observation?status=final",)), 422, "DiagnosticReport search"),
        (topic_subscription("urgent-finding", filters=("DiagnosticReport?colour=red",)), 400, "colour"),
        (topic_subscription("urgent-finding", content="everything"), 422, "payload content"),
        (topic_subscription("urgent-finding", channel={"type": "rest-hook", "endpoint": HOOK}), 422, "payload"),
    ],
)
def test_a_bad_topic_subscription_is_refused_with_an_outcome(
    fhir: FhirTestClient, body: dict[str, Any], status: int, says: str
) -> None:
    response = fhir.post(f"{BASE}/Subscription", json=body)
    assert response.status_code == status, response.text
    assert response.json()["resourceType"] == "OperationOutcome" and says in response.text


def test_a_topic_subscription_needs_the_right_to_search_cases(tmp_path: Path) -> None:
    idp = IdentityProvider(tmp_path)
    with make_client(tmp_path / "var", **FAST, **idp.settings) as fhir:
        someone = fhir.post(f"{BASE}/Patient", json=patient("Topical")).json()["id"]
        no_reports = idp.headers("user/Subscription.cruds patient/Observation.rs", patient=someone)
        refused = fhir.post(f"{BASE}/Subscription", json=topic_subscription("urgent-finding"), headers=no_reports)
        assert refused.status_code == 403, refused.text
        allowed = idp.headers("user/Subscription.cruds patient/DiagnosticReport.rs", patient=someone)
        created = fhir.post(f"{BASE}/Subscription", json=topic_subscription("urgent-finding"), headers=allowed)
        assert created.status_code == 201 and created.json()["status"] == "active", created.text


def announce(fhir: FhirTestClient, notice: Notification) -> None:
    """Append a ``workflow.notification`` in a transaction, as the workflow engine does."""

    async def append() -> None:
        store = await fhir.app.state.engine.tenant("default")  # type: ignore[attr-defined]
        async with store.transaction() as tx:
            await tx.append_event(NOTIFICATION, notice.payload())

    fhir.portal.call(append)


def _case(fhir: FhirTestClient) -> tuple[str, str]:
    subject = fhir.post(f"{BASE}/Patient", json=patient("Emailed", "Quentin")).json()["id"]
    report = fhir.post(f"{BASE}/DiagnosticReport", json=diagnostic_report(f"Patient/{subject}")).json()["id"]
    return subject, report


def test_a_topic_email_carries_the_case_link_only(tmp_path: Path) -> None:
    with smtp_server() as (port, inbox):
        config = tmp_path / "notify.json"
        smtp = {"host": "127.0.0.1", "port": port, "tls": "none", "sender": "noreply@dermbridge.test"}
        config.write_text(json.dumps({"default": {"smtp": smtp}}))
        with make_client(tmp_path / "var", notify_config=config, **FAST) as fhir:
            channel = {"type": "email", "endpoint": "mailto:ehr-inbox@example.org"}
            created = fhir.post(f"{BASE}/Subscription", json=topic_subscription("case-finalised", channel=channel))
            assert created.status_code == 201, created.text
            subject, report = _case(fhir)
            announce(fhir, Notification("review-opened", report, subject, "", extra={"urgency": "routine"}))
            announce(fhir, Notification(SIGNED_OFF, report, subject, "", "signed off"))
            wait_for(lambda: len(inbox.messages) >= 1)
            wait_for(lambda: _audited(fhir, f"Subscription/{created.json()['id']}") >= 1)
            [(to, message)] = inbox.messages  # the review-opened event is not this topic's
            assert to == ["ehr-inbox@example.org"]
            body = message.get_content()
            assert f"/fhir/default/DiagnosticReport/{report}" in body
            assert "Emailed" not in body and "Quentin" not in body and subject not in body
            status = fhir.get(f"{BASE}/Subscription/{created.json()['id']}/$status")
            assert status.status_code == 200, status.text
            parameters = {p["name"]: p for p in status.json()["entry"][0]["resource"]["parameter"]}
            assert parameters["type"]["valueCode"] == "query-status"
            assert parameters["topic"]["valueCanonical"] == "urn:dermbridge:topic:case-finalised"
            assert parameters["events-since-subscription-start"]["valueString"] == "1"


def test_status_is_for_topic_subscriptions(fhir: FhirTestClient) -> None:
    body = topic_subscription("urgent-finding", channel={"type": "rest-hook", "endpoint": HOOK})
    body["criteria"] = "Observation?status=final"
    created = fhir.post(f"{BASE}/Subscription", json=body).json()["id"]
    refused = fhir.get(f"{BASE}/Subscription/{created}/$status")
    assert refused.status_code == 422 and "not topic-based" in refused.text
    assert fhir.get(f"{BASE}/Subscription/nope/$status").status_code == 404


def test_reviewer_emails_that_fail_are_retried_then_given_up_and_audited(tmp_path: Path) -> None:
    config = tmp_path / "notify.json"
    smtp = {"host": "127.0.0.1", "port": free_port(), "tls": "none", "sender": "noreply@dermbridge.test"}  # no server
    config.write_text(json.dumps({"default": {"smtp": smtp, "reviewer_email": {"urgencies": ["asap"]}}}))
    with make_client(tmp_path / "var", notify_config=config, **FAST) as fhir:
        person = {"resourceType": "Practitioner", "telecom": [{"system": "email", "value": "ada@example.org"}]}
        ada = fhir.post(f"{BASE}/Practitioner", json=person).json()["id"]
        role = {"resourceType": "PractitionerRole", "practitioner": {"reference": f"Practitioner/{ada}"},
                "specialty": [DERMATOLOGY]}  # fmt: skip
        assert fhir.post(f"{BASE}/PractitionerRole", json=role).status_code == 201
        subject, report = _case(fhir)
        extra = {"urgency": "asap", "tier": "dermatologist", "review": "r1"}
        announce(fhir, Notification("review-opened", report, subject, "", extra=extra))
        wait_for(lambda: _audited(fhir, f"Practitioner/{ada}") == 3)
        params = {"entity": f"Practitioner/{ada}", "subtype": "urn:dermbridge:audit|notification"}
        audit = fhir.get(f"{BASE}/AuditEvent", params=params).json()
        outcomes = sorted(e["resource"]["outcome"] for e in audit["entry"])
        assert outcomes == ["4", "4", "8"]  # each failed attempt, then the last (max attempts 3)
        assert all(e["resource"]["entity"][1]["what"]["reference"] == "Task/r1" for e in audit["entry"])


def test_reviewer_emails_go_to_the_reviewers_holding_the_tiers_licence(tmp_path: Path) -> None:
    md = {"system": "http://terminology.hl7.org/CodeSystem/v2-0360", "code": "MD"}
    with smtp_server() as (port, inbox):
        config = tmp_path / "notify.json"
        smtp = {"host": "127.0.0.1", "port": port, "tls": "none", "sender": "noreply@dermbridge.test"}
        config.write_text(json.dumps({"default": {"smtp": smtp, "reviewer_email": {}}}))
        with make_client(tmp_path / "var", notify_config=config, **FAST) as fhir:
            case = ReviewCase(fhir)
            case.set_policy({"tiers": {"dermatologist": {"specialties": ["http://snomed.info/sct|394582007"],
                                                         "licence": {"codes": ["|".join(md.values())]}}}})  # fmt: skip
            for address, qualification in (("licensed@example.org", [{"code": {"coding": [md]}}]),
                                           ("unlicensed@example.org", [])):  # fmt: skip
                person: dict[str, Any] = {"resourceType": "Practitioner",
                                          "telecom": [{"system": "email", "value": address}]}  # fmt: skip
                if qualification:
                    person["qualification"] = qualification
                who = fhir.post(f"{BASE}/Practitioner", json=person).json()["id"]
                role = {"resourceType": "PractitionerRole", "practitioner": {"reference": f"Practitioner/{who}"},
                        "specialty": [DERMATOLOGY]}  # fmt: skip
                assert fhir.post(f"{BASE}/PractitionerRole", json=role).status_code == 201
            extra = {"urgency": "asap", "tier": "dermatologist", "review": "r2"}
            announce(fhir, Notification("review-opened", case.case, case.patient, "", extra=extra))
            wait_for(lambda: len(inbox.messages) >= 1)
            announce(fhir, Notification("review-opened", case.case, case.patient, "", extra={**extra, "review": "r3"}))
            wait_for(lambda: len(inbox.messages) >= 2)  # the first event is settled by then (commit order)
            assert [rcpt for rcpt, _ in inbox.messages] == [["licensed@example.org"], ["licensed@example.org"]]


def test_an_exhausted_tier_announces_the_next_tiers_review(fhir: FhirTestClient) -> None:
    case = ReviewCase(fhir)
    case.set_policy({"tiers": {"dermatologist": {"specialties": ["http://snomed.info/sct|394582007"],
                                                 "escalate_to": "consultant"}}})  # fmt: skip
    task = case.open()["id"]  # opened directly (no workflow event): nothing is announced for it
    with hook_server() as hook:
        channel = {"type": "rest-hook", "endpoint": hook.url, "payload": "application/fhir+json"}
        body = topic_subscription("urgent-finding", channel=channel, filters=(f"DiagnosticReport?_id={case.case}",))
        assert fhir.post(f"{BASE}/Subscription", json=body).status_code == 201
        for name in ("Dr A", "Dr B", "Dr C"):
            assert case.reviewer(name).op(task, "decline", ("reason", "outside-expertise")).status_code == 200
        wait_for(lambda: len(hook.received) == 1)
        consultant = fhir.get(f"{BASE}/Task", params={"code": "urn:dermbridge:review-tier|consultant"}).json()
        status = json.loads(hook.received[0].body)["entry"][0]["resource"]["parameter"][-1]["part"]
        context = next(p["valueReference"]["reference"] for p in status if p["name"] == "additional-context")
        assert context.endswith(f"/Task/{consultant['entry'][0]['resource']['id']}")


def _audited(fhir: FhirTestClient, entity: str) -> int:
    params = {"subtype": "urn:dermbridge:audit|notification", "entity": entity, "_total": "accurate"}
    return int(fhir.get(f"{BASE}/AuditEvent", params=params).json()["total"])
