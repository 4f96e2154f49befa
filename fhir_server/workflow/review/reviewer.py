"""Who is reviewing, and which tiers they may review (practitionerrole.html).

The caller is the user of the access token: its SMART ``fhirUser`` claim
(scopes-and-launch-context.html#fhiruser) names a ``Practitioner`` (or one of their ``PractitionerRole``s).
A tier is open to them through a PractitionerRole of theirs that is ``active``, whose ``period`` covers
now (the end is the credential's expiry: an expired role cannot claim) and that is coded with the tier
(``PractitionerRole.code`` ``urn:dermbridge:review-tier|<tier>``) or has one of the tier's specialties
(the tenant's ``review.policy``), and, when the tier requires a licence, who holds a current one
(``Practitioner.qualification``, ``fhir_server.workflow.review.licence``). Only user tokens review: a
system client has no fhirUser, a patient/ token is refused before this by the operation's scope check.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fhir_server.errors import forbidden
from fhir_server.repository import Repository
from fhir_server.security.scopes import Access
from fhir_server.workflow.review.codes import TIER_SYSTEM, codes_of
from fhir_server.workflow.review.licence import licence_refusal
from fhir_server.workflow.review.periods import refusal_of
from fhir_server.workflow.review.policy import ReviewPolicy

MAX_ROLES = 100
ROLE_PERIOD = "PractitionerRole.period"


@dataclass(frozen=True, slots=True)
class RoleStanding:
    """One PractitionerRole of the reviewer: the tiers it covers and, when it cannot be used, why."""

    reference: str
    tiers: frozenset[str]
    refusal: str | None  # None: usable now


@dataclass(frozen=True, slots=True)
class Reviewer:
    practitioner: str  # Practitioner/id
    display: str
    roles: tuple[RoleStanding, ...]
    unlicensed: dict[str, str] = field(default_factory=dict)  # tier -> why the reviewer lacks its licence

    @property
    def tiers(self) -> frozenset[str]:
        """The tiers the reviewer may review now."""
        return frozenset(t for r in self.roles if r.refusal is None for t in r.tiers if t not in self.unlicensed)

    def check(self, tier: str) -> None:
        """403 with the reason unless the reviewer may review ``tier`` now."""
        if tier in self.tiers:
            return
        if tier in self.unlicensed and any(r.refusal is None and tier in r.tiers for r in self.roles):
            raise forbidden(f"{self.practitioner} cannot review tier {tier!r}: {self.unlicensed[tier]}")
        lapsed = [f"{r.reference}: {r.refusal}" for r in self.roles if tier in r.tiers and r.refusal]
        if lapsed:
            raise forbidden(f"{self.practitioner} cannot review tier {tier!r}: " + "; ".join(lapsed))
        raise forbidden(f"{self.practitioner} has no PractitionerRole for review tier {tier!r}")

    def reference(self) -> dict[str, str]:
        return {"reference": self.practitioner, **({"display": self.display} if self.display else {})}


def fhir_user_reference(access: Access | None) -> str:
    """``Type/id`` of the token's fhirUser (an absolute URL's last two segments); 403 without one."""
    value = access.fhir_user if access is not None else None
    if not value:
        raise forbidden(
            "review operations are done by a clinician: they need a user token whose fhirUser claim names a "
            "Practitioner (e.g. a client created with --fhir-user Practitioner/123)"
        )
    parts = value.rstrip("/").split("/")
    if len(parts) < 2 or parts[-2] not in ("Practitioner", "PractitionerRole"):
        raise forbidden(f"the token's fhirUser {value[:200]!r} is not a Practitioner: only practitioners review")
    return f"{parts[-2]}/{parts[-1]}"


async def identify(repo: Repository, access: Access | None, policy: ReviewPolicy, now: datetime) -> Reviewer:
    """The caller as a reviewer, with the standing of each of their PractitionerRoles."""
    system = Repository.system(
        repo.store, reason="identify the reviewer", local_base=repo.local_base, tx=repo.transaction
    )
    reference = fhir_user_reference(access)
    kind, id = reference.split("/", 1)
    if kind == "PractitionerRole":
        role = await system.current("PractitionerRole", id)
        practitioner = ((role or {}).get("practitioner") or {}).get("reference")
        if not isinstance(practitioner, str) or not practitioner.startswith("Practitioner/"):
            raise forbidden(f"the token's fhirUser {reference} is not a PractitionerRole of a known Practitioner")
        reference, id = practitioner, practitioner.split("/", 1)[1]
    person = await system.current("Practitioner", id)
    if person is None:
        raise forbidden(f"the token's fhirUser {reference} is not a known Practitioner")
    if person.get("active") is False:
        raise forbidden(f"{reference} is not active")
    found = await system.find("PractitionerRole", [("practitioner", reference)], MAX_ROLES)
    roles = tuple(standing(s.resource, policy, now) for s in found)
    unlicensed: dict[str, str] = {}
    for tier in {t for r in roles for t in r.tiers}:
        requirement = policy.tier(tier).licence
        why = await licence_refusal(system, reference, person, requirement, now) if requirement else None
        if why is not None:
            unlicensed[tier] = why
    return Reviewer(reference, _name(person), roles, unlicensed)


def standing(role: dict[str, Any], policy: ReviewPolicy, now: datetime) -> RoleStanding:
    """The tiers a PractitionerRole covers and, when it cannot be used now, why."""
    coded = {c for concept in role.get("code") or [] for c in codes_of(concept, TIER_SYSTEM)}
    held = {f"{c.get('system')}|{c.get('code')}" for s in role.get("specialty") or [] for c in s.get("coding") or []}
    by_specialty = {name for name, tier in policy.tiers.items() if held & set(tier.specialties)}
    return RoleStanding(f"PractitionerRole/{role.get('id')}", frozenset(coded | by_specialty), _refusal(role, now))


def _refusal(role: dict[str, Any], now: datetime) -> str | None:
    if role.get("active") is False:
        return "the role is not active"
    period = role.get("period") or {}
    return refusal_of({"start": period.get("start")}, "the role", ROLE_PERIOD, now) or refusal_of(
        {"end": period.get("end")}, "the role (credential)", ROLE_PERIOD, now
    )


def _name(person: dict[str, Any]) -> str:
    for name in person.get("name") or []:
        text = name.get("text") or " ".join([*name.get("given", []), name.get("family", "")]).strip()
        if text:
            return str(text)[:200]
    return ""
