"""What the reviewer typed is never silently lost (review of the people slice, items 3, 4, 6): a refused
decision shows the case page again with the typed form and the reason; the worklist's counts never read as
totals when the page lists only part of the queue; a form must be urlencoded with each field once."""

from __future__ import annotations

import re
from pathlib import Path

from fhir_server.reviewer_app.worklist import Row, counts
from tests.conftest import BASE, make_client
from tests.fhir_server.workflow.review_case import ReviewCase

PASSWORD = "correct horse battery"
NO_TOKEN = {"Authorization": ""}


def _row(number: int, priority: str, mine: bool = False) -> Row:
    return Row(str(number), priority, "", "dermatologist", "Queued", mine, "")


def test_counts_of_a_partly_listed_queue_are_lower_bounds() -> None:
    fifty_urgent = [_row(n, "asap") for n in range(50)]
    assert counts(fifty_urgent, None) == {"total": "50+", "urgent": "50+", "mine": "0+", "queued": "50+"}
    assert counts(fifty_urgent, 120)["total"] == "120"
    mixed = [_row(1, "asap", mine=True), _row(2, "routine")]
    assert counts(mixed, None)["urgent"] == "1"  # a routine row listed: every urgent case came before it
    assert counts(mixed, 2) == {"total": "2", "urgent": "1", "mine": "1", "queued": "1"}


def _sign_in(client: object, username: str) -> None:
    page = client.get("/auth/login", headers=NO_TOKEN)  # type: ignore[attr-defined]
    form = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page.text))
    signed = client.post(  # type: ignore[attr-defined]
        "/auth/login", data={**form, "username": username, "password": PASSWORD}, headers=NO_TOKEN,
        follow_redirects=False,
    )  # fmt: skip
    assert signed.status_code == 303, signed.text


def test_a_refused_decision_shows_the_typed_form_again(tmp_path: Path) -> None:
    with make_client(tmp_path / "var") as client:
        case = ReviewCase(client)
        task = case.open()["id"]
        reviewer = case.reviewer("Dr A")
        people = client.app.state.people  # type: ignore[attr-defined]
        practitioner = reviewer.practitioner.removeprefix("Practitioner/")
        client.portal.call(people.users.create, "default", "dra", practitioner, ["clinician-reviewer"], PASSWORD)
        _sign_in(client, "dra")
        csrf = client.get("/auth/session", headers=NO_TOKEN).json()["csrf"]
        claimed = client.post(f"/app/cases/{task}/claim", data={"csrf": csrf}, headers=NO_TOKEN)
        assert claimed.status_code == 200, claimed.text
        code = re.findall(r'<option value="(\d+)"', claimed.text)[0]  # a diagnosis of the value set
        typed = {"csrf": csrf, "decision": "override", "lesion": "BodyStructure/not-this-patients", "diagnosis": code,
                 "urgency": "asap", "management": "biopsy", "note": "Needs a consultant"}  # fmt: skip
        refused = client.post(f"/app/cases/{task}/decide", data=typed, headers=NO_TOKEN)  # the operation refuses
        assert refused.status_code == 422, refused.text
        assert "Not done:" in refused.text and "Needs a consultant</textarea>" in refused.text
        assert f'<option value="{code}" selected>' in refused.text
        repeated = client.post(
            f"/app/cases/{task}/decide", content=f"csrf={csrf}&note=a&note=b",
            headers={**NO_TOKEN, "Content-Type": "application/x-www-form-urlencoded"},
        )  # fmt: skip
        assert repeated.status_code == 400 and "repeated" in repeated.text
        assert client.get(f"{BASE}/Task/{task}").json()["status"] == "in-progress"
