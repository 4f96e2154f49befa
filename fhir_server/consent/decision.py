"""Consent decisions (consent.html, R4): given a patient, a purpose of use and an actor, permit or
deny, and which Consent decided.

Rules, as the R4 provision model has them: a Consent's root provision sets the base policy
(``type`` permit or deny) and nested provisions are exceptions to their parent; the deepest
provision whose conditions (purpose, actor, period) all hold decides. Among the patient's active
Consents in force, the most recent one with an applicable provision decides. No applicable
Consent means **deny**: no permit, no analysis.

A provision speaks about the AI analysis when it names ``ai-analysis`` or a purpose the tenant maps
to it (``fhir_server.consent.purposes``: a hospital Consent for ``TREAT`` by default).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fhir_server.consent.purposes import AI_ANALYSIS, PURPOSE_SYSTEM, RESEARCH, TREATMENT, Purpose, purposes_covering
from fhir_server.repository import Repository, Stored
from fhir_server.search.values import date_range

__all__ = ["AI_ANALYSIS", "PURPOSE_SYSTEM", "RESEARCH", "TREATMENT", "Decision", "decide"]
MAX_CONSENTS = 200


@dataclass(frozen=True, slots=True)
class Decision:
    permit: bool
    consent: Stored | None
    reason: str


def _within(period: Any, at: float) -> bool:
    if not isinstance(period, dict):
        return True
    start = date_range(period["start"]) if isinstance(period.get("start"), str) else None
    end = date_range(period["end"]) if isinstance(period.get("end"), str) else None
    return (start is None or start[0] <= at) and (end is None or at < end[1])


def _purpose_holds(provision: dict[str, Any], purposes: frozenset[Purpose]) -> bool:
    named = provision.get("purpose") or []
    return not named or any((c.get("system"), c.get("code")) in purposes for c in named if isinstance(c, dict))


def _actor_holds(provision: dict[str, Any], actor: str | None) -> bool:
    actors = provision.get("actor") or []
    if not actors:
        return True
    return actor is not None and any((a.get("reference") or {}).get("reference") == actor for a in actors)


def _decide_provision(
    provision: dict[str, Any], purposes: frozenset[Purpose], actor: str | None, at: float, inherited: str | None
) -> str | None:
    """The type (permit/deny) of the deepest applicable provision, or None when none applies."""
    applies = _within(provision.get("period"), at) and _purpose_holds(provision, purposes)
    applies = applies and _actor_holds(provision, actor)
    if not applies:
        return None
    decided = provision.get("type") or inherited
    for nested in provision.get("provision") or []:
        deeper = _decide_provision(nested, purposes, actor, at, decided)
        if deeper is not None:
            decided = deeper  # an exception to its parent
    return decided


def _recency(stored: Stored) -> tuple[float, str]:
    when = stored.resource.get("dateTime")
    span = date_range(when) if isinstance(when, str) else None
    return (span[0] if span else 0.0, stored.version.last_updated)


async def decide(
    repo: Repository, patient_id: str, purpose: Purpose, actor: str | None = None,
    at: datetime | None = None,
) -> Decision:  # fmt: skip
    """consent.html#notes: whether the patient's Consents permit ``purpose`` (for ``actor``) now."""
    moment = (at or datetime.now(UTC)).timestamp()
    purposes = await purposes_covering(repo.transaction or repo.store, purpose)
    consents = await repo.find("Consent", [("patient", f"Patient/{patient_id}"), ("status", "active")], MAX_CONSENTS)
    for stored in sorted(consents, key=_recency, reverse=True):
        provision = stored.resource.get("provision")
        if not isinstance(provision, dict):
            continue
        decided = _decide_provision(provision, purposes, actor, moment, None)
        if decided in ("permit", "deny"):
            verb = "permits" if decided == "permit" else "denies"
            return Decision(decided == "permit", stored, f"Consent/{stored.resource['id']} {verb} {purpose[1]}")
    return Decision(False, None, f"no active Consent of the patient applies to {purpose[1]}")
