"""The review Task's state machine (task.html#statemachine), as pure functions of a Task and a moment.

    requested/queued --$claim--> in-progress/claimed (owner, lease) --$complete--> completed/decided
                                  |  $release, or the lease ran out: back to requested/queued
                                  |  $decline (coded reason): back to requested/queued, or after
                                  |  ``max_declines`` declines rejected/tier-exhausted
    requested/queued --$decline--> (the same: an eligible reviewer may decline without claiming)

A claim's lease ends at the ``urn:dermbridge:review-lease-end`` extension; a lapsed claim counts as queued
for every transition (applied lazily when the Task is next claimed or listed, see ``lapse``). The
owner may still complete or release a lapsed claim nobody else has taken. An illegal transition is 409.
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

from fhir_server.errors import OperationOutcomeError, conflict
from fhir_server.workflow.review.codes import (
    CLAIMED,
    DECLINE_EXTENSION,
    DECLINE_REASONS,
    DECLINE_SYSTEM,
    LEASE_EXTENSION,
    QUEUED,
    TIER_EXHAUSTED,
    state_concept,
)
from fhir_server.workflow.review.queue import instant

Task = dict[str, Any]


def lease_end(task: Task) -> str | None:
    return next((e.get("valueInstant") for e in task.get("extension") or [] if e.get("url") == LEASE_EXTENSION), None)


def lapsed(task: Task, now: datetime) -> bool:
    """Whether ``task`` is a claim whose lease has run out."""
    end = lease_end(task)
    return task.get("status") == "in-progress" and end is not None and datetime.fromisoformat(end) <= now


def owner(task: Task) -> str | None:
    return (task.get("owner") or {}).get("reference")


def declines(task: Task) -> list[dict[str, Any]]:
    return [e for e in task.get("extension") or [] if e.get("url") == DECLINE_EXTENSION]


def declined_by(task: Task) -> set[str]:
    """The reviewers who declined the Task (it is not offered to them again)."""
    found = set()
    for decline in declines(task):
        for part in decline.get("extension") or []:
            if part.get("url") == "by":
                found.add(str(part.get("valueReference", {}).get("reference")))
    return found


def lapse(task: Task, now: datetime) -> Task | None:
    """The Task back in the queue when its claim lapsed at ``now``; None when it has not."""
    if not lapsed(task, now):
        return None
    note = f"claim by {owner(task)} lapsed at {lease_end(task)}: returned to the queue"
    return _queued(task, now, note)


def claim(task: Task, reviewer: dict[str, str], now: datetime, lease_until: datetime) -> Task:
    """``$claim``: a queued Task (or the reviewer's own claim, whose lease is renewed) becomes theirs."""
    current = lapse(task, now) or task
    if current.get("status") == "in-progress" and owner(current) != reviewer["reference"]:
        raise conflict(f"the review is claimed by {owner(current)} until {lease_end(current)}")
    _require(current, ("requested", "in-progress"), "claim")
    claimed = _changed(current, now, "in-progress", CLAIMED)
    claimed["owner"] = dict(reviewer)
    claimed["executionPeriod"] = {"start": (current.get("executionPeriod") or {}).get("start") or instant(now)}
    _set_lease(claimed, instant(lease_until))
    return claimed


def release(task: Task, reviewer: dict[str, str], now: datetime) -> Task:
    """``$release``: the owner gives the Task back to the queue."""
    _require_owner(task, reviewer, "release")
    return _queued(task, now, f"released by {reviewer['reference']}")


def decline(task: Task, reviewer: dict[str, str], reason: str, note: str, now: datetime, max_declines: int) -> Task:
    """``$decline``: the Task back in the queue with the reviewer's coded reason; the ``max_declines``-th
    decline exhausts the tier (status ``rejected``, businessStatus ``tier-exhausted``)."""
    if reason not in DECLINE_REASONS:
        raise OperationOutcomeError.of(400, "code-invalid", f"reason must be one of {', '.join(DECLINE_REASONS)}")
    current = lapse(task, now) or task
    if current.get("status") == "in-progress":
        _require_owner(current, reviewer, "decline")
    else:
        _require(current, ("requested",), "decline")
    if reviewer["reference"] in declined_by(current):
        raise conflict(f"{reviewer['reference']} has already declined this review")
    coding = {"system": DECLINE_SYSTEM, "code": reason, "display": DECLINE_REASONS[reason]}
    parts = [
        {"url": "reason", "valueCoding": coding},
        {"url": "by", "valueReference": dict(reviewer)},
        {"url": "at", "valueDateTime": instant(now)},
    ]
    if note:
        parts.append({"url": "note", "valueString": note})
    declined = _queued(current, now, f"declined by {reviewer['reference']}: {DECLINE_REASONS[reason]}")
    declined["extension"] = [*declined.get("extension", []), {"url": DECLINE_EXTENSION, "extension": parts}]
    declined["statusReason"] = {"coding": [coding], "text": note or DECLINE_REASONS[reason]}
    if len(declines(declined)) >= max_declines:
        declined = _changed(declined, now, "rejected", TIER_EXHAUSTED)
        declined["statusReason"]["text"] = f"declined {len(declines(declined))} times: the tier is exhausted"
    return declined


def complete(task: Task, reviewer: dict[str, str], now: datetime, state: str, outputs: list[dict[str, Any]]) -> Task:
    """``$complete``: the owner's decision closes the Task (``completed``, businessStatus ``state``)."""
    _require_owner(task, reviewer, "complete")
    done = _changed(task, now, "completed", state)
    done["executionPeriod"] = {**(task.get("executionPeriod") or {}), "end": instant(now)}
    done["output"] = [*(task.get("output") or []), *outputs]
    _set_lease(done, None)
    return done


def _require(task: Task, states: tuple[str, ...], verb: str) -> None:
    if task.get("status") not in states:
        raise conflict(
            f"${verb}: a review Task that is {task.get('status')} cannot take it (it must be {'/'.join(states)})"
        )


def _require_owner(task: Task, reviewer: dict[str, str], verb: str) -> None:
    _require(task, ("in-progress",), verb)
    if owner(task) != reviewer["reference"]:
        raise conflict(f"only the reviewer who claimed it ({owner(task)}) can {verb} this review")


def _changed(task: Task, now: datetime, status: str, state: str) -> Task:
    changed = copy.deepcopy(task)
    changed["status"] = status
    changed["businessStatus"] = state_concept(state)
    changed["lastModified"] = instant(now)
    return changed


def _queued(task: Task, now: datetime, why: str) -> Task:
    queued = _changed(task, now, "requested", QUEUED)
    queued.pop("owner", None)
    queued.pop("executionPeriod", None)
    _set_lease(queued, None)
    queued["note"] = [*(task.get("note") or []), {"time": instant(now), "text": why}]
    return queued


def _set_lease(task: Task, end: str | None) -> None:
    kept = [e for e in task.get("extension") or [] if e.get("url") != LEASE_EXTENSION]
    if end is not None:
        kept.append({"url": LEASE_EXTENSION, "valueInstant": end})
    if kept:
        task["extension"] = kept
    else:
        task.pop("extension", None)
