"""Drift alerts: a model doing measurably worse than its card in a subgroup raises one DetectedIssue (with
an outbox event and an AuditEvent), searchable and delivered like any resource; a shortfall within chance,
or too few lesions, raises nothing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from functools import partial
from typing import Any

import pytest

from dermbridge.outcomes import DriftOnHistology
from fhir_server.outcomes.codes import DRIFT_IDENTIFIER
from fhir_server.outcomes.drift import TOPIC, check_device, default_window, raise_alert
from fhir_server.repository import Repository
from inference.body_site_groups import site_group
from tests.conftest import BASE, make_client
from tests.fhir_server.outcomes.cohort import Cohort
from tests.fhir_server.subscriptions.endpoints import HookServer, hook_server, wait_for
from tests.fhir_server.subscriptions.test_rest_hook import FAST
from tests.server import cli

DRIFT = "urn:dermbridge:outcome|ai-performance-drift"
CLAIMS = [
    {"subgroup": "all lesions", "metric": "sensitivity", "condition": "melanoma", "value": 0.99},  # 4/5: 0.38-0.96
    {"subgroup": "all lesions", "metric": "specificity", "condition": "melanoma", "value": 0.6},  # 5/7: 0.36-0.92
    {
        "subgroup": "Fitzpatrick V-VI",
        "metric": "sensitivity",
        "condition": "melanoma",
        "value": 0.95,
        "stratum": {"fitzpatrick": ["V", "VI"]},
    },  # 3/3: too few
    {"subgroup": "all", "metric": "accuracy", "value": 0.9},  # not a claim this server checks
]


@pytest.fixture(scope="module")
def hook() -> Iterator[HookServer]:
    with hook_server() as server:
        yield server


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory, hook: HookServer) -> Iterator[Cohort]:
    with make_client(tmp_path_factory.mktemp("drift") / "var", **FAST) as client:
        channel = {"type": "rest-hook", "endpoint": hook.url, "payload": "application/fhir+json"}
        subscribed = client.post(
            f"{BASE}/Subscription",
            json={
                "resourceType": "Subscription",
                "status": "requested",
                "reason": "AI drift alerts",
                "criteria": f"DetectedIssue?code={DRIFT}",
                "channel": channel,
            },
        )
        assert subscribed.json()["status"] == "active", subscribed.text
        built = Cohort(client, CLAIMS)
        built.linked()
        yield built


def store(cohort: Cohort) -> Any:
    return cohort.client.portal.call(cohort.client.app.state.engine.tenant, "default")  # type: ignore[attr-defined]


def device(cohort: Cohort) -> dict[str, Any]:
    return dict(cohort.client.get(f"{BASE}/Device/{cohort.device}").json())


def check(cohort: Cohort, min_cases: int) -> list[Any]:
    start, end = default_window(datetime.now(UTC))
    run = partial(
        check_device,
        store(cohort),
        device(cohort),
        start,
        end,
        site_group=site_group,
        min_cases=min_cases,
        trail=cohort.client.app.state.audit,
    )  # type: ignore[attr-defined]
    return list(cohort.client.portal.call(run))


def issues(cohort: Cohort) -> list[dict[str, Any]]:
    found = cohort.client.get(f"{BASE}/DetectedIssue", params={"code": DRIFT, "implicated": f"Device/{cohort.device}"})
    return [e["resource"] for e in found.json().get("entry", [])]


def test_too_few_lesions_raise_nothing(cohort: Cohort) -> None:
    evaluations = check(cohort, min_cases=10)
    assert {e.claim.metric: e.status for e in evaluations} == {
        "sensitivity": "insufficient",
        "specificity": "insufficient",
    }
    assert issues(cohort) == []


def test_histology_arriving_checks_the_lesions_models(cohort: Cohort) -> None:
    on_histology = DriftOnHistology(cohort.client.app.state.audit, min_cases=5)  # type: ignore[attr-defined]
    cohort.client.portal.call(on_histology, store(cohort), cohort.lesions[:1])
    assert len(issues(cohort)) == 1  # the first drift alert of the module is raised here


def test_a_drift_below_the_cards_figure_is_raised_once(cohort: Cohort, hook: HookServer) -> None:
    evaluations = {(e.claim.metric, e.claim.dimension): e for e in check(cohort, min_cases=5)}
    drift = evaluations[("sensitivity", "all")]
    assert (drift.status, drift.successes, drift.n, round(drift.upper or 0, 4)) == ("drift", 4, 5, 0.9638)
    assert evaluations[("specificity", "all")].status == "consistent"  # 0.71 (0.36-0.92) is no evidence below 0.6
    assert evaluations[("sensitivity", "fitzpatrick")].status == "insufficient"
    (issue,) = issues(cohort)
    assert drift.issue == f"DetectedIssue/{issue['id']}"
    assert issue["status"] == "final" and issue["severity"] == "high"
    assert "0.80 (95% CI 0.38-0.96, 4/5 lesions, against histopathology" in issue["detail"]
    assert "model card says 0.99" in issue["detail"]
    wait_for(lambda: any(r.path == f"/hook/DetectedIssue/{issue['id']}" for r in hook.received))  # the subscriber
    check(cohort, min_cases=5)  # the same drift in the same period (the hook raised it already): no second alert
    assert len(issues(cohort)) == 1
    events = cohort.client.portal.call(store(cohort).claim_events, "drift-probe", 100_000, 600)
    raised = [e.payload for e in events if e.topic == TOPIC]
    assert [p["detected_issue"] for p in raised] == [drift.issue]
    subtype = "urn:dermbridge:audit-subtype|ai-performance-drift"
    audited = cohort.client.get(f"{BASE}/AuditEvent", params={"subtype": subtype, "_total": "accurate"}).json()
    assert audited["total"] == 1  # the search loads what is staged first
    assert audited["entry"][0]["resource"]["entity"][0]["what"] == {"reference": drift.issue}


def test_clients_cannot_raise_or_change_a_drift_alert(cohort: Cohort) -> None:
    forged = {
        "resourceType": "DetectedIssue",
        "status": "final",
        "code": {"coding": [{"system": "urn:dermbridge:outcome", "code": "ai-performance-drift"}]},
    }
    assert cohort.client.post(f"{BASE}/DetectedIssue", json=forged).status_code == 409


def test_a_look_alike_alert_neither_enters_nor_stands_for_the_drift(cohort: Cohort) -> None:
    """Pentest 3, finding 2: a client pre-created a DetectedIssue with the alert's predictable identifier, and
    the check took it for the alert already raised (found by identifier alone): no alert, no notification."""
    (drift,) = [e for e in check(cohort, min_cases=5) if (e.claim.metric, e.claim.dimension) == ("sensitivity", "all")]
    start, end = "2001-01-01", "2001-02-01"
    key = f"{cohort.device}/{drift.claim.key}/{start}/{end}"
    look_alike = {"resourceType": "DetectedIssue", "status": "final", "detail": "nothing to see",
                  "identifier": [{"system": DRIFT_IDENTIFIER, "value": key}]}  # fmt: skip
    refused = cohort.client.post(f"{BASE}/DetectedIssue", json=look_alike)
    assert refused.status_code == 409 and "server" in refused.json()["issue"][0]["diagnostics"]
    shouted = {**look_alike, "identifier": [{"system": DRIFT_IDENTIFIER.upper(), "value": key}]}
    assert cohort.client.post(f"{BASE}/DetectedIssue", json=shouted).status_code == 409

    tenant = store(cohort)

    async def planted() -> str:  # as one written before the rule was there
        repo = Repository.system(tenant, reason="test: a look-alike written before the rule")
        return str((await repo.create(look_alike, resource_type="DetectedIssue")).resource["id"])

    fake = f"DetectedIssue/{cohort.client.portal.call(planted)}"
    raised = cohort.client.portal.call(raise_alert, store(cohort), device(cohort), drift, start, end, None)
    assert raised != fake
    alert = cohort.client.get(f"{BASE}/{raised}").json()
    assert alert["implicated"] == [{"reference": f"Device/{cohort.device}"}] and alert["detail"] != "nothing to see"
    assert cohort.client.portal.call(raise_alert, store(cohort), device(cohort), drift, start, end, None) == raised


def test_the_cli_reports_each_claim_and_exits_1_on_a_drift(cohort: Cohort) -> None:
    data_dir = str(cohort.client.app.state.settings.data_dir)  # type: ignore[attr-defined]
    ran = cli("ai-performance", "check", "--tenant", "default", "--min-cases", "5", "--data-dir", data_dir)
    assert ran.returncode == 1, ran.stderr
    lines = ran.stdout.splitlines()
    assert any(line.startswith("drift\tTest model 1.0: sensitivity for melanoma (all lesions): 0.80") for line in lines)
    assert any(line.startswith("consistent\t") for line in lines)
    quiet = cli("ai-performance", "check", "--tenant", "default", "--data-dir", data_dir)  # 20 lesions by default
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
