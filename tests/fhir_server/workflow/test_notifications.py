"""The workflow's notifications delivered (issue 14, "Notifications"): cases C-STOREd through the shipped
ai-then-signoff and ai-only flows reach topic-based Subscriptions (Subscriptions Backport IG) on a real HTTP
server and, for an urgent review, the tier's eligible reviewers by email on a real SMTP server (aiosmtpd);
exactly what they should, once, and a ``patient/`` token's Subscription hears of its own patient only."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from fhir_server.subscriptions.topic_bundle import NOTIFICATION_PROFILE, STATUS_PROFILE
from fhir_server.subscriptions.topics import FILTER_CRITERIA, PAYLOAD_CONTENT
from fhir_server.subscriptions.worker import SubscriptionWorker
from tests.conftest import BASE
from tests.fhir_server.security.smart import IdentityProvider
from tests.fhir_server.subscriptions.endpoints import HookServer, Inbox, Received, hook_server, smtp_server
from tests.fhir_server.subscriptions.endpoints import wait_for as wait_until
from tests.fhir_server.workflow.conftest import (
    REVIEW,
    Node,
    consenting_patient,
    lesion_instance,
    running_node,
    wait_for,
)
from tests.fhir_server.workflow.review_case import DERMATOLOGY, Reviewer
from tests.schema import assert_r4

pytestmark = pytest.mark.interop
BENIGN_SEED, SUSPICIOUS_SEED = 26, 28  # the demo model: nevus 1.00; melanoma 0.99
TOPIC = "urn:dermbridge:topic:"
SNOMED = "http://snomed.info/sct"
GENERAL_PRACTICE = {"coding": [{"system": SNOMED, "code": "394814009", "display": "General practice"}]}
SENDER = "noreply@dermbridge.test"


@dataclass
class Setting:
    node: Node
    hook: HookServer
    inbox: Inbox
    idp: IdentityProvider

    def subscribe(self, topic: str, name: str, content: str | None, *, patient: str | None = None,
                  payload: str = "application/fhir+json", headers: dict[str, str] | None = None) -> str:  # fmt: skip
        """A topic-based Subscription (backport profile), its deliveries marked ``X-Sub: name``."""
        channel: dict[str, Any] = {"type": "rest-hook", "endpoint": self.hook.url, "payload": payload,
                                   "header": [f"X-Sub: {name}"]}  # fmt: skip
        if content:
            channel["_payload"] = {"extension": [{"url": PAYLOAD_CONTENT, "valueCode": content}]}
        body: dict[str, Any] = {"resourceType": "Subscription", "status": "requested", "reason": name,
                                "criteria": TOPIC + topic, "channel": channel}  # fmt: skip
        if patient:
            filters = [{"url": FILTER_CRITERIA, "valueString": f"DiagnosticReport?subject=Patient/{patient}"}]
            body["_criteria"] = {"extension": filters}
        response = self.node.client.post(f"{BASE}/Subscription", json=body, headers=headers or {})
        assert response.status_code == 201, response.text
        assert response.json()["status"] == "active"
        return str(response.json()["id"])

    def received(self, name: str) -> list[Received]:
        return [r for r in self.hook.received if r.headers.get("x-sub") == name]

    def settle(self) -> None:
        """Until every change committed so far is handled: the worker takes events in commit order, so once a
        marker change made now is delivered, everything before it has been."""
        marker = f"Marker{len(self.hook.received)}x{self.hook.attempts}"
        channel = {"type": "rest-hook", "endpoint": self.hook.url, "header": [f"X-Marker: {marker}"]}
        body = {"resourceType": "Subscription", "status": "requested", "reason": "marker",
                "criteria": f"Patient?family={marker}", "channel": channel}  # fmt: skip
        assert self.node.client.post(f"{BASE}/Subscription", json=body).status_code == 201
        self.node.client.post(f"{BASE}/Patient", json={"resourceType": "Patient", "name": [{"family": marker}]})
        wait_until(lambda: any(r.headers.get("x-marker") == marker for r in self.hook.received))
        self.hook.received[:] = [r for r in self.hook.received if "x-marker" not in r.headers]

    def practitioner(self, name: str, email: str, specialty: dict[str, Any], expires: str | None = None) -> str:
        client = self.node.client
        person = {"resourceType": "Practitioner", "name": [{"text": name}],
                  "telecom": [{"system": "email", "value": email, "use": "work"}]}  # fmt: skip
        practitioner = str(client.post(f"{BASE}/Practitioner", json=person).json()["id"])
        role: dict[str, Any] = {"resourceType": "PractitionerRole", "active": True, "specialty": [specialty],
                                "practitioner": {"reference": f"Practitioner/{practitioner}"}}  # fmt: skip
        if expires:
            role["period"] = {"start": "2020-01-01", "end": expires}
        assert client.post(f"{BASE}/PractitionerRole", json=role).status_code == 201
        return f"Practitioner/{practitioner}"


@pytest.fixture(scope="module")
def setting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setting]:
    tmp = tmp_path_factory.mktemp("notifications")
    idp = IdentityProvider(tmp)
    with hook_server() as hook, smtp_server() as (port, inbox):
        notify = {"smtp": {"host": "127.0.0.1", "port": port, "tls": "none", "sender": SENDER},
                  "suppressed": ["gone@example.org"], "preferences": {"quiet@example.org": {"email": False}},
                  "reviewer_email": {}}  # fmt: skip
        config = tmp / "notify.json"
        config.write_text(json.dumps({"default": notify}))
        fast = {"subscription_retry_seconds": 0.05, "subscription_poll_seconds": 0.05,
                "subscription_max_attempts": 3, "subscription_allowed_hosts": ["127.0.0.1"]}  # fmt: skip
        with running_node(tmp, notify_config=config, **fast, **idp.settings) as node:
            here = Setting(node, hook, inbox, idp)
            here.practitioner("Dr Ada", "ada@example.org", DERMATOLOGY)
            here.practitioner("Dr Lapsed", "lapsed@example.org", DERMATOLOGY, expires="2021-12-31")
            here.practitioner("Dr Gone", "gone@example.org", DERMATOLOGY)  # suppressed
            here.practitioner("Dr Quiet", "quiet@example.org", DERMATOLOGY)  # has turned email off
            here.practitioner("Dr General", "gp@example.org", GENERAL_PRACTICE)  # not of the tier
            yield here


def bundle_of(received: Received) -> dict[str, Any]:
    assert received.method == "POST" and received.headers["content-type"] == "application/fhir+json"
    bundle: dict[str, Any] = json.loads(received.body)
    assert_r4(bundle)
    assert bundle["type"] == "history" and bundle["meta"]["profile"] == [NOTIFICATION_PROFILE]
    return bundle


def status_of(bundle: dict[str, Any]) -> dict[str, Any]:
    """The SubscriptionStatus Parameters (the first entry) as name -> value, the event's parts flattened."""
    first = bundle["entry"][0]
    assert first["resource"]["meta"]["profile"] == [STATUS_PROFILE] and first["request"]["method"] == "GET"
    values: dict[str, Any] = {}
    for parameter in first["resource"]["parameter"]:
        for item in parameter.get("part", [parameter]):
            value = next(v for k, v in item.items() if k.startswith("value"))
            values.setdefault(item["name"], []).append(value)
    return values


def case_url(report: str) -> str:
    return f"{BASE}/DiagnosticReport/{report}"


def test_ai_then_signoff_notifies_each_topic_once_and_emails_the_eligible_reviewers(setting: Setting) -> None:
    node = setting.node
    node.activate("ai-then-signoff")
    patient = consenting_patient(node.client, "NOTE-SO")
    setting.subscribe("urgent-finding", "urgent", "full-resource", patient=patient)
    setting.subscribe("review-opened", "opened", "empty", patient=patient)
    setting.subscribe("case-finalised", "final", "id-only", patient=patient)
    mailed = len(setting.inbox.messages)
    node.store(lesion_instance("NOTE-SO", seed=SUSPICIOUS_SEED, accession="NOTE-SO"))
    report, root = node.case(patient)
    node.analyse()
    review = wait_for(node.client, "Task", {"code": REVIEW, "focus": f"DiagnosticReport/{report['id']}"})[0]
    assert review["priority"] == "asap"
    node.until(f"Task/{root['id']}", lambda r: r.get("businessStatus", {}).get("text") == "in review")
    setting.settle()
    [urgent], [opened] = setting.received("urgent"), setting.received("opened")
    assert setting.received("final") == []
    # full-resource: the case and its review Task, as the owner may read them
    bundle = bundle_of(urgent)
    status = status_of(bundle)
    assert status["topic"] == [TOPIC + "urgent-finding"] and status["type"] == ["event-notification"]
    assert status["events-since-subscription-start"] == status["event-number"] == ["1"]
    assert status["focus"][0]["reference"].endswith(f"/DiagnosticReport/{report['id']}")
    assert status["additional-context"][0]["reference"].endswith(f"/Task/{review['id']}")
    assert [e["resource"]["resourceType"] for e in bundle["entry"][1:]] == ["DiagnosticReport", "Task"]
    assert bundle["entry"][1]["resource"]["id"] == report["id"]
    assert status["timestamp"][0] <= bundle["timestamp"]  # committed, then sent
    # empty: the status only
    empty = bundle_of(opened)
    assert len(empty["entry"]) == 1 and "focus" not in status_of(empty)
    assert status_of(empty)["topic"] == [TOPIC + "review-opened"]
    # the reviewers of the tier: only the one eligible, not suppressed and not opted out
    new = setting.inbox.messages[mailed:]
    assert [rcpt for rcpt, _ in new] == [["ada@example.org"]]
    body = new[0][1].get_content()
    assert f"/fhir/default/Task/{review['id']}" in body
    assert "NOTE-SO" not in body and patient not in body and "elanoma" not in body  # a link, no clinical content

    ada = Reviewer(node.client, next(p for p in _practitioners(node) if p[1] == "Dr Ada")[0])
    assert ada.op(review["id"], "claim").status_code == 200
    lesion = node.client.get(f"{BASE}/BodyStructure", params={"patient": f"Patient/{patient}"}).json()["entry"][0]
    finding = [("lesion", {"reference": f"BodyStructure/{lesion['resource']['id']}"}),
               ("diagnosis", {"coding": [{"system": "http://snomed.info/sct", "code": "400096001"}]})]  # fmt: skip
    done = ada.op(review["id"], "complete", ("decision", "override"), ("finding", finding))  # no demo confirm
    assert done.status_code == 200, done.text
    wait_until(lambda: len(setting.received("final")) == 1)
    setting.settle()
    [final] = setting.received("final")
    signed = bundle_of(final)
    assert status_of(signed)["topic"] == [TOPIC + "case-finalised"]
    assert [e["fullUrl"].split("/fhir/default/")[1] for e in signed["entry"][1:]] == [
        f"DiagnosticReport/{report['id']}",
        f"Task/{review['id']}",
    ]
    assert all("resource" not in e for e in signed["entry"][1:])  # id-only

    sent, messages = len(setting.hook.received), len(setting.inbox.messages)
    assert _redeliver_everything(node) > 0  # every event again, as after a crash before the acknowledgements
    setting.settle()
    assert len(setting.hook.received) == sent and len(setting.inbox.messages) == messages
    audit = node.get("AuditEvent", subtype="urn:dermbridge:audit|notification", entity=f"Task/{review['id']}")
    outcomes = sorted(e["resource"]["outcomeDesc"] for e in audit.get("entry", []))
    assert any("ada@example.org" in o for o in outcomes), outcomes


def test_ai_only_escalates_a_routine_case_without_an_urgent_finding_or_email(setting: Setting) -> None:
    node = setting.node
    node.activate("ai-only")
    patient = consenting_patient(node.client, "NOTE-AI")
    setting.subscribe("escalated", "escalated", None, patient=patient, payload="application/json")  # a chat hook
    setting.subscribe("urgent-finding", "urgent-ai", "id-only", patient=patient)
    mailed = len(setting.inbox.messages)
    node.store(lesion_instance("NOTE-AI", seed=BENIGN_SEED, suspicious=False, accession="NOTE-AI"))
    report, root = node.case(patient)
    node.analyse()
    review = wait_for(node.client, "Task", {"code": REVIEW, "focus": f"DiagnosticReport/{report['id']}"})[0]
    assert review["priority"] == "routine"  # the demo card does not allow clinical use: a human reads it
    node.until(f"Task/{root['id']}", lambda r: r.get("businessStatus", {}).get("text") == "in review")
    setting.settle()
    [chat] = setting.received("escalated")
    text = json.loads(chat.body)["text"]
    assert f"/fhir/default/DiagnosticReport/{report['id']}" in text
    assert setting.received("urgent-ai") == [] and len(setting.inbox.messages) == mailed


def test_a_patient_tokens_topic_subscription_hears_of_its_own_patient_only(setting: Setting) -> None:
    node = setting.node
    node.activate("ai-then-signoff")
    mine, other = consenting_patient(node.client, "NOTE-MINE"), consenting_patient(node.client, "NOTE-OTHER")
    app = setting.idp.headers("user/Subscription.cruds patient/DiagnosticReport.rs", patient=mine)
    setting.subscribe("review-opened", "mine", "full-resource", headers=app)
    for mrn in ("NOTE-OTHER", "NOTE-MINE"):
        node.store(lesion_instance(mrn, seed=BENIGN_SEED, suspicious=False, accession=mrn))
    reports = {}
    for who in (mine, other):
        report, _ = node.case(who)
        reports[who] = report["id"]
    node.analyse()
    for who in (mine, other):
        wait_for(node.client, "Task", {"code": REVIEW, "focus": f"DiagnosticReport/{reports[who]}"})
    setting.settle()
    [heard] = setting.received("mine")
    bundle = bundle_of(heard)
    assert [e["resource"]["resourceType"] for e in bundle["entry"][1:]] == ["DiagnosticReport"]  # no Task scope
    assert bundle["entry"][1]["resource"]["subject"]["reference"] == f"Patient/{mine}"
    assert reports[other] not in heard.body.decode() and other not in heard.body.decode()


def _practitioners(node: Node) -> list[tuple[str, str]]:
    bundle = node.get("Practitioner", _count="50")
    return [(f"Practitioner/{e['resource']['id']}", e["resource"]["name"][0]["text"]) for e in bundle["entry"]]


def _redeliver_everything(node: Node) -> int:
    worker: SubscriptionWorker = node.client.app.state.subscriptions  # type: ignore[attr-defined]

    async def replay() -> int:
        store = await worker.engine.tenant("default")
        events = await store.claim_events("replay", 10_000, 60.0)
        for event in events:
            await worker.handle(store, event)
        return len(events)

    return int(node.client.portal.call(replay))
