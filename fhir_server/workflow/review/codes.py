"""The codes a review Task carries (task.html), in one place so producers, searches and tests agree.

- ``Task.code``: ``urn:dermbridge:task|clinician-review`` (the code the inference worker's review Tasks
  already carry) and ``urn:dermbridge:review-tier|<tier>``: ``Task?code=urn:dermbridge:review-tier|<tier>``
  finds a tier's queue (R4 ``code`` is a token over every coding). The tier is also ``Task.performerType``,
  searchable as R4's ``performer`` parameter.
- ``Task.businessStatus`` (R4 ``business-status``): ``urn:dermbridge:review-state|<state>``, the queue's own
  states beside ``Task.status``.
- A claim's lease ends at the ``urn:dermbridge:review-lease-end`` extension (an instant); the due date is
  ``Task.restriction.period.end`` (R4: "when fulfillment sought").
"""

from __future__ import annotations

from typing import Any, Literal

TASK_SYSTEM = "urn:dermbridge:task"
REVIEW_CODE = "clinician-review"
TIER_SYSTEM = "urn:dermbridge:review-tier"
STATE_SYSTEM = "urn:dermbridge:review-state"
DECLINE_SYSTEM = "urn:dermbridge:review-decline-reason"
DECISION_SYSTEM = "urn:dermbridge:review-decision"
IDENTIFIER_SYSTEM = "urn:dermbridge:review-task"
LEASE_EXTENSION = "urn:dermbridge:review-lease-end"
DECLINE_EXTENSION = "urn:dermbridge:review-decline"
PRIORITY_SYSTEM = "http://hl7.org/fhir/request-priority"

Urgency = Literal["routine", "urgent", "asap", "stat"]
URGENCIES: tuple[Urgency, ...] = ("stat", "asap", "urgent", "routine")  # most urgent first (request-priority)

# Task.businessStatus codes of the queue
QUEUED, CLAIMED, DECIDED, NO_DECISION, TIER_EXHAUSTED = "queued", "claimed", "decided", "no-decision", "tier-exhausted"
STATE_DISPLAY = {
    QUEUED: "Queued for review",
    CLAIMED: "Claimed by a reviewer",
    DECIDED: "Reviewed: decision recorded",
    NO_DECISION: "Reviewed: reviewer declined to decide",
    TIER_EXHAUSTED: "Tier exhausted: declined by too many reviewers",
}
DECLINE_REASONS = {
    "outside-expertise": "Outside the reviewer's expertise",
    "conflict-of-interest": "Conflict of interest",
    "image-quality": "Images not adequate for this reviewer to assess",
    "workload": "Reviewer unavailable (workload)",
    "other": "Other reason",
}
DECISIONS = {
    "confirm": "Confirm the AI findings",
    "override": "Override with the reviewer's own findings",
    "decline-to-decide": "Decline to decide",
}


def review_coding() -> dict[str, str]:
    return {"system": TASK_SYSTEM, "code": REVIEW_CODE, "display": "Clinician review"}


def tier_coding(tier: str) -> dict[str, str]:
    return {"system": TIER_SYSTEM, "code": tier, "display": f"Review tier {tier}"}


def state_concept(state: str) -> dict[str, Any]:
    return {"coding": [{"system": STATE_SYSTEM, "code": state, "display": STATE_DISPLAY[state]}]}


def codes_of(concept: Any, system: str) -> list[str]:
    """The codes of ``system`` in a CodeableConcept (anything else: none)."""
    codings = concept.get("coding") if isinstance(concept, dict) else None
    return [str(c.get("code")) for c in codings or [] if isinstance(c, dict) and c.get("system") == system]


def is_review_task(resource: dict[str, Any] | None) -> bool:
    """A Task of the review queue (what the queue's operations, not plain writes, change)."""
    if resource is None or resource.get("resourceType") not in (None, "Task"):
        return False
    code = resource.get("code")
    return bool(codes_of(code, TIER_SYSTEM)) and REVIEW_CODE in codes_of(code, TASK_SYSTEM)


def tier_of(task: dict[str, Any]) -> str:
    return (codes_of(task.get("code"), TIER_SYSTEM) or [""])[0]


def state_of(task: dict[str, Any]) -> str:
    return (codes_of(task.get("businessStatus"), STATE_SYSTEM) or [""])[0]
