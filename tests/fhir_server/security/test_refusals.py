"""Aggregation of refused token requests before they reach the audit trail."""

from __future__ import annotations

from fhir_server.security.refusals import OVERFLOW, RefusalGroup, RefusalTally


class SteppedClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_first_refusal_is_audited_the_rest_counted_per_window() -> None:
    clock = SteppedClock()
    tally = RefusalTally(window=60, clock=clock)
    group = RefusalGroup("default", "default.c", "203.0.113.9", 401)
    written = [tally.refused(group, "client authentication failed") for _ in range(300)]
    assert written[0] == group and written[1:] == [None] * 299
    clock.now = 59
    assert tally.due() == []
    clock.now = 60
    (summary,) = tally.due()
    assert summary.group == group and summary.count == 299 and summary.start <= summary.end
    assert tally.refused(group, "again") == group  # a new window


def test_a_spray_of_groups_joins_one_overflow_group_per_tenant() -> None:
    tally = RefusalTally(groups_per_tenant=20, clock=SteppedClock())
    written = [tally.refused(RefusalGroup("default", f"default.{n}", "a", 401), "no") for n in range(500)]
    immediate = [g for g in written if g is not None]
    assert len(immediate) == 21 and immediate[-1].client_id == OVERFLOW
    other = RefusalGroup("clinic-b", "clinic-b.x", "a", 401)
    assert tally.refused(other, "no") == other  # another tenant has its own budget
    summaries = tally.due(everything=True)
    assert sum(s.count for s in summaries) + len(immediate) + 1 == 501
    assert tally.due(everything=True) == [] and not tally._open and not tally._groups_of
