"""A tenant's review policy: tiers and who may review them, due dates by urgency, claim leases, declines.

Kept as the tenant setting ``review.policy`` (``fhir_server.tenant_settings``), so a change is seen by
every process on its next read, with no restart::

    {"tiers": {"dermatologist": {"specialties": ["http://snomed.info/sct|394582007"],
                               "escalate_to": "consultant"}},
     "due_days": {"stat": 1, "asap": 2, "urgent": 3, "routine": 7},
     "lease_minutes": 30, "max_declines": 3}

``due_days`` is the time for the *review* (the triage read), counted from when its Task is opened. Its
defaults leave room for the UK's 2-week-wait for suspected skin cancer (NICE NG12: an urgent suspected
cancer referral is *seen* within two weeks of the referral): a melanoma/SCC suspicion (``asap``) is
read within 2 days, another malignant suspicion (``urgent``) within 3, a routine case within 7; a
tenant sets its own service levels.
A reviewer is eligible for a tier through a PractitionerRole coded with the tier
(``urn:dermbridge:review-tier|<tier>`` in ``PractitionerRole.code``) or with one of the tier's specialties;
a tier's ``licence`` (``fhir_server.workflow.review.licence``) also asks for a current licence in a jurisdiction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from fhir_server.storage.port import TenantReader, TenantStore
from fhir_server.tenant_settings import read_setting, write_setting
from fhir_server.workflow.review.codes import URGENCIES, Urgency
from fhir_server.workflow.review.licence import LicenceRequirement, LicenceRequirementError, parse_requirement

SETTING = "review.policy"
TIER_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
DERMATOLOGY = "http://snomed.info/sct|394582007"  # Dermatology (qualifier value), a practice-setting specialty
DEFAULT_TIER = "dermatologist"
MAX_LEASE_MINUTES = 24 * 60
# The urgency of a case by the AI's most concerning risk tier (the model card's risk hierarchy): a suspected
# melanoma or SCC is an urgent suspected-cancer referral (NICE NG12, skin cancers: 2-week wait), a suspected BCC is
# routine unless a clinician says otherwise (NG12), another malignant suspicion is urgent.
RISK_URGENCY: dict[str, Urgency] = {
    "melanoma": "asap",
    "squamous-cell-carcinoma": "asap",
    "basal-cell-carcinoma": "routine",
    "other-malignant": "urgent",
}


class ReviewPolicyError(ValueError):
    """A review policy that cannot be applied (unknown urgency, bad tier name, bad numbers)."""


@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    specialties: tuple[str, ...] = ()  # "system|code" of PractitionerRole.specialty codings that qualify
    escalate_to: str | None = None  # the tier a case goes to when this one is exhausted
    licence: LicenceRequirement | None = None  # a current licence in a jurisdiction (None: none needed)


@dataclass(frozen=True, slots=True)
class ReviewPolicy:
    tiers: dict[str, Tier] = field(default_factory=lambda: {DEFAULT_TIER: Tier(DEFAULT_TIER, (DERMATOLOGY,))})
    due_days: dict[str, int] = field(default_factory=lambda: {"stat": 1, "asap": 2, "urgent": 3, "routine": 7})
    lease_minutes: int = 30
    max_declines: int = 3

    def due(self, urgency: Urgency, authored: datetime) -> datetime | None:
        days = self.due_days.get(urgency)
        return authored + timedelta(days=days) if days is not None else None

    def lease(self) -> timedelta:
        return timedelta(minutes=self.lease_minutes)

    def tier(self, name: str) -> Tier:
        return self.tiers.get(name) or Tier(name)


def urgency_for_risk(risk_tier: str | None) -> Urgency:
    """The review urgency for the case's highest AI risk tier (``routine`` for pre-malignant, benign, none)."""
    return RISK_URGENCY.get(risk_tier or "", "routine")


def check_tier(name: str) -> str:
    if not TIER_PATTERN.match(name):
        raise ReviewPolicyError(f"{name[:50]!r} is not a tier name (lower-case letters, digits and '-', at most 40)")
    return name


def parse_policy(value: Any) -> ReviewPolicy:
    """The policy a setting holds (defaults for what it leaves out); ReviewPolicyError when malformed."""
    if value is None:
        return ReviewPolicy()
    if not isinstance(value, dict):
        raise ReviewPolicyError("the review policy is a JSON object")
    default = ReviewPolicy()
    tiers = default.tiers
    if "tiers" in value:
        tiers = {check_tier(str(name)): _tier(str(name), spec) for name, spec in dict(value["tiers"]).items()}
    due_days = dict(value.get("due_days", default.due_days))
    for urgency, days in due_days.items():
        if urgency not in URGENCIES or not isinstance(days, int) or not 0 < days <= 365:
            raise ReviewPolicyError(f"due_days: {urgency!r} -> {days!r} is not an urgency and 1..365 days")
    lease = value.get("lease_minutes", default.lease_minutes)
    declines = value.get("max_declines", default.max_declines)
    if not isinstance(lease, int) or not 1 <= lease <= MAX_LEASE_MINUTES:
        raise ReviewPolicyError(f"lease_minutes must be 1..{MAX_LEASE_MINUTES}")
    if not isinstance(declines, int) or not 1 <= declines <= 20:
        raise ReviewPolicyError("max_declines must be 1..20")
    return ReviewPolicy(tiers, due_days, lease, declines)


def _tier(name: str, spec: Any) -> Tier:
    if not isinstance(spec, dict):
        raise ReviewPolicyError(f"tier {name}: a JSON object")
    specialties = spec.get("specialties", [])
    if not isinstance(specialties, list) or not all(isinstance(s, str) and "|" in s for s in specialties):
        raise ReviewPolicyError(f"tier {name}: specialties are 'system|code' strings")
    escalate_to = spec.get("escalate_to")
    try:
        licence = parse_requirement(name, spec.get("licence"))
    except LicenceRequirementError as exc:
        raise ReviewPolicyError(str(exc)) from exc
    return Tier(name, tuple(specialties), check_tier(str(escalate_to)) if escalate_to else None, licence)


async def read_policy(reader: TenantReader) -> ReviewPolicy:
    """The tenant's review policy (the defaults when none is set)."""
    return parse_policy(await read_setting(reader, SETTING))


async def set_policy(store: TenantStore, value: Any) -> ReviewPolicy:
    """Keep the tenant's review policy (None: back to the defaults) once it parses; returns it."""
    policy = parse_policy(value)
    await write_setting(store, SETTING, value)
    return policy


def describe_policy(policy: ReviewPolicy) -> list[str]:
    """The policy as lines an operator reads."""
    lines = [
        f"tier {t.name}: specialties {', '.join(t.specialties) or '(PractitionerRole.code only)'}"
        + (f"; escalates to {t.escalate_to}" if t.escalate_to else "")
        + (f"; needs a current licence: {t.licence.describe()}" if t.licence else "")
        for t in policy.tiers.values()
    ]
    due = ", ".join(f"{u} {d} days" for u, d in policy.due_days.items())
    return [
        *lines,
        f"due: {due}",
        f"lease: {policy.lease_minutes} minutes",
        f"declines to exhaust: {policy.max_declines}",
    ]
