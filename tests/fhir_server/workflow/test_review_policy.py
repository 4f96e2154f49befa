"""The review policy a tenant sets (``review.policy``) and the urgency the AI's risk gives a case."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from fhir_server.workflow.review.policy import ReviewPolicyError, parse_policy, urgency_for_risk


def test_defaults_read_suspected_melanoma_and_scc_in_time_for_the_two_week_wait() -> None:
    policy = parse_policy(None)
    authored = datetime(2026, 11, 30, tzinfo=UTC)
    assert urgency_for_risk("melanoma") == urgency_for_risk("squamous-cell-carcinoma") == "asap"
    assert urgency_for_risk("basal-cell-carcinoma") == urgency_for_risk("benign") == urgency_for_risk(None) == "routine"
    assert policy.due("asap", authored) == authored + timedelta(days=2)  # the triage read: room for the 2-week wait
    assert policy.due("routine", authored) == authored + timedelta(days=7)  # every case gets a due date
    assert policy.tiers["dermatologist"].specialties == ("http://snomed.info/sct|394582007",)


def test_a_tenant_sets_its_own_tiers_due_dates_and_leases() -> None:
    policy = parse_policy(
        {
            "tiers": {"gp": {"escalate_to": "dermatologist"}, "dermatologist": {}},
            "due_days": {"asap": 7, "routine": 42},
            "lease_minutes": 10,
            "max_declines": 2,
        }
    )
    assert policy.due("asap", datetime(2026, 1, 1, tzinfo=UTC)) == datetime(2026, 1, 8, tzinfo=UTC)
    assert policy.tier("gp").escalate_to == "dermatologist" and policy.lease() == timedelta(minutes=10)


@pytest.mark.parametrize(
    "bad",
    [
        [],
        {"tiers": {"Bad Tier": {}}},
        {"due_days": {"soon": 3}},
        {"due_days": {"asap": 0}},
        {"lease_minutes": 0},
        {"max_declines": "3"},
        {"tiers": {"gp": {"specialties": ["394582007"]}}},
    ],
)
def test_a_malformed_policy_is_refused(bad: object) -> None:
    with pytest.raises(ReviewPolicyError):
        parse_policy(bad)
