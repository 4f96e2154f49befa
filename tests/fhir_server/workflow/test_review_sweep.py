"""Issue 14, "A claim has a lease: an abandoned claim returns to the queue": the server's scheduled sweep
returns it with nobody listing the worklist, audited; two sweeps at once return each claim once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fhir_server.workflow.review.sweep import return_lapsed_claims
from tests.conftest import BASE, FhirTestClient, make_client
from tests.fhir_server.workflow.review_case import ReviewCase

DEADLINE = 30.0
LAPSED = "urn:dermbridge:audit-subtype|review-claim-lapsed"


@pytest.fixture
def swept(tmp_path: Path) -> Iterator[FhirTestClient]:
    """A server whose sweep runs every 50 ms."""
    with make_client(tmp_path / "var", review_sweep_seconds=0.05) as client:
        yield client


def claimed(case: ReviewCase) -> tuple[str, str]:
    task = case.open()["id"]
    reviewer = case.reviewer("Dr Away")
    assert reviewer.op(task, "claim").status_code == 200
    return task, reviewer.practitioner


def lapsed_events(client: FhirTestClient, task: str) -> list[dict[str, Any]]:
    found = client.get(f"{BASE}/AuditEvent", params={"subtype": LAPSED, "entity": f"Task/{task}"}).json()
    return [e["resource"] for e in found.get("entry", [])]


def test_an_abandoned_claim_returns_to_the_queue_with_nobody_listing_it(swept: FhirTestClient) -> None:
    case = ReviewCase(swept)
    task, practitioner = claimed(case)
    assert swept.get(f"{BASE}/Task/{task}").json()["status"] == "in-progress"  # the lease still runs
    case.lapse_claim(task)
    deadline = time.monotonic() + DEADLINE
    while (current := swept.get(f"{BASE}/Task/{task}").json())["status"] != "requested":
        assert time.monotonic() < deadline, f"the lapsed claim was not returned in {DEADLINE} s"
        time.sleep(0.05)
    assert "owner" not in current
    assert any("lapsed" in n["text"] for n in current.get("note", []))
    [event] = lapsed_events(swept, task)
    assert event["entity"][0]["detail"][0]["valueString"] == practitioner
    assert event["entity"][1]["what"]["reference"] == f"Patient/{case.patient}"


def test_two_sweeps_at_once_return_each_lapsed_claim_once(client: FhirTestClient) -> None:
    case = ReviewCase(client)
    tasks = []
    for tier in ("dermatologist", "consultant", "gp"):
        task = case.open(tier=tier)["id"]
        tasks.append(task)
    case.set_policy({"tiers": {t: {"specialties": ["http://snomed.info/sct|394582007"]} for t in
                               ("dermatologist", "consultant", "gp")}})  # fmt: skip
    reviewer = case.reviewer("Dr Busy")
    for task in tasks:
        assert reviewer.op(task, "claim").status_code == 200
        case.lapse_claim(task)
    store = client.portal.call(client.app.state.engine.tenant, "default")  # type: ignore[attr-defined]
    audit = client.app.state.audit  # type: ignore[attr-defined]

    async def together() -> list[list[str]]:
        now = datetime.now(UTC)
        return list(await asyncio.gather(*(return_lapsed_claims(store, now, audit) for _ in range(3))))

    rounds = client.portal.call(together)
    assert sorted(t for r in rounds for t in r) == sorted(tasks)  # each exactly once, whoever won its race
    assert all(client.get(f"{BASE}/Task/{t}").json()["status"] == "requested" for t in tasks)
    assert all(len(lapsed_events(client, t)) == 1 for t in tasks)
    assert client.portal.call(return_lapsed_claims, store, datetime.now(UTC)) == []


def test_a_sweep_looks_at_a_bounded_number_of_claims(client: FhirTestClient) -> None:
    case = ReviewCase(client)
    case.set_policy({"tiers": {t: {"specialties": ["http://snomed.info/sct|394582007"]} for t in ("a", "b")}})
    reviewer = case.reviewer("Dr Bounded")
    for tier in ("a", "b"):
        task = case.open(tier=tier)["id"]
        assert reviewer.op(task, "claim").status_code == 200
        case.lapse_claim(task)
    store = client.portal.call(client.app.state.engine.tenant, "default")  # type: ignore[attr-defined]
    assert len(client.portal.call(return_lapsed_claims, store, datetime.now(UTC), None, 1)) == 1
    assert len(client.portal.call(return_lapsed_claims, store, datetime.now(UTC), None, 1)) == 1
