"""The worklist at scale (issue 14, found by bench/workflow_bench.py): with more open review Tasks than one
search returns (``MAX_WORKLIST``), the most urgent case is still listed first (before, only the oldest
``MAX_WORKLIST`` were read, and the newest urgent case was not listed at all)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fhir_server.repository import Repository
from fhir_server.workflow.review import open_review
from fhir_server.workflow.review.operations import MAX_WORKLIST
from tests.conftest import FhirTestClient
from tests.fhir_server.workflow.review_case import ReviewCase


def test_the_newest_urgent_case_heads_a_worklist_longer_than_one_search(client: FhirTestClient) -> None:
    case = ReviewCase(client)
    store = client.portal.call(client.app.state.engine.tenant, "default")  # type: ignore[attr-defined]
    base = datetime.now(UTC) - timedelta(days=1)

    async def seed() -> str:
        async with store.transaction() as tx:
            repo = Repository.system(store, reason="test", tx=tx)
            for n in range(MAX_WORKLIST + 1):
                await open_review(repo, report_id=f"old-{n}", patient_id=case.patient, tier="dermatologist",
                                  reason="routine", urgency="routine", now=base + timedelta(seconds=n))  # fmt: skip
            urgent = await open_review(repo, report_id=case.case, patient_id=case.patient, tier="dermatologist",
                                       reason="AI suspects melanoma", urgency="asap")  # fmt: skip
            return str(urgent.resource["id"])

    urgent = client.portal.call(seed)
    listed = case.reviewer("Dr Ada").get("Task/$worklist?_count=5").json()
    assert listed["entry"][0]["resource"]["id"] == urgent
    assert listed["entry"][1]["resource"]["authoredOn"] == base.isoformat(timespec="milliseconds")  # the oldest next
    assert "total" not in listed  # not counted exactly beyond one search's worth
