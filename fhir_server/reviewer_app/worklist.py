"""The worklist's rows and counts, from the ``Task/$worklist`` Bundle (most urgent first, then the earliest due
date: the operation's order is kept) and the filters a reviewer picks (tier, status)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fhir_server.workflow.review.codes import STATE_DISPLAY, TIER_SYSTEM

STATUSES = {"all": "All", "queued": "Waiting to be claimed", "mine": "Claimed by me"}
URGENT = ("stat", "asap", "urgent")


@dataclass(frozen=True, slots=True)
class Row:
    task_id: str
    priority: str
    due: str
    tier: str
    state: str
    mine: bool
    reason: str


def tier_of(task: dict[str, Any]) -> str:
    codings = (task.get("code") or {}).get("coding") or []
    return next((str(c.get("code")) for c in codings if c.get("system") == TIER_SYSTEM), "")


def row(task: dict[str, Any], me: str) -> Row:
    state = next((c.get("code") for c in (task.get("businessStatus") or {}).get("coding") or []), "")
    owner = (task.get("owner") or {}).get("reference")
    return Row(
        task_id=str(task["id"]),
        priority=str(task.get("priority") or "routine"),
        due=str(((task.get("restriction") or {}).get("period") or {}).get("end") or "")[:16].replace("T", " "),
        tier=tier_of(task),
        state=STATE_DISPLAY.get(str(state), str(state)),
        mine=task.get("status") == "in-progress" and owner == me,
        reason=str((task.get("reasonCode") or {}).get("text") or ""),
    )


def rows(tasks: list[dict[str, Any]], me: str, status: str) -> list[Row]:
    listed = [row(t, me) for t in tasks]
    if status == "queued":
        return [r for r in listed if not r.mine]
    if status == "mine":
        return [r for r in listed if r.mine]
    return listed


def counts(listed: list[Row], total: int | None) -> dict[str, str]:
    """The queue's counts. ``total`` is the Bundle's (None: the operation could not count the whole queue).
    When the page lists only part of the queue a count is a lower bound ("50+"), never read as a total; the
    urgent count is exact once a non-urgent row is listed (the queue is ordered most urgent first)."""
    whole = total is not None and total <= len(listed)

    def shown(n: int, exact: bool = False) -> str:
        return str(n) if whole or exact else f"{n}+"

    urgent = sum(r.priority in URGENT for r in listed)
    return {
        "total": str(total) if total is not None else shown(len(listed)),
        "urgent": shown(urgent, exact=any(r.priority not in URGENT for r in listed)),
        "mine": shown(sum(r.mine for r in listed)),
        "queued": shown(sum(not r.mine for r in listed)),
    }
