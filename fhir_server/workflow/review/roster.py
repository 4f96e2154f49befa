"""Who may review a tier now, and how to reach them by email (practitionerrole.html, practitioner.html).

The same eligibility as a claim (``reviewer.standing``): an active PractitionerRole whose period covers now
and which is coded with the tier or holds one of its specialties, of an active Practitioner holding the
licence the tier requires, if any (``licence``). Their email is
the first ``Practitioner.telecom`` of system ``email`` (not ``use`` ``old``, not past its ``period``);
a Practitioner without one is left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fhir_server.errors import OperationOutcomeError
from fhir_server.repository import Repository
from fhir_server.workflow.review.licence import licence_refusal
from fhir_server.workflow.review.policy import ReviewPolicy
from fhir_server.workflow.review.reviewer import standing

MAX_ROLES = 1000


@dataclass(frozen=True, slots=True)
class Contact:
    practitioner: str  # Practitioner/id
    email: str


async def eligible_reviewers(repo: Repository, tier: str, policy: ReviewPolicy, now: datetime) -> list[Contact]:
    """The Practitioners who may review ``tier`` now, with their email addresses, in a stable order."""
    roles = await repo.find("PractitionerRole", [("_sort", "_id")], MAX_ROLES)
    practitioners: list[str] = []
    for role in (r.resource for r in roles):
        try:
            held = standing(role, policy, now)
        except OperationOutcomeError:  # an unreadable period: the role cannot be used (as for a claim)
            continue
        reference = str((role.get("practitioner") or {}).get("reference") or "")
        usable = tier in held.tiers and held.refusal is None and reference.startswith("Practitioner/")
        if usable and reference not in practitioners:
            practitioners.append(reference)
    contacts = []
    licence = policy.tier(tier).licence
    for reference in practitioners:
        person = await repo.current("Practitioner", reference.removeprefix("Practitioner/"))
        if person is None or person.get("active") is False:
            continue
        if licence is not None and await licence_refusal(repo, reference, person, licence, now) is not None:
            continue  # the tier requires a current licence the Practitioner does not hold: they could not claim
        email = _email(person, now)
        if email is not None:
            contacts.append(Contact(reference, email))
    return contacts


def _email(person: dict[str, Any], now: datetime) -> str | None:
    for telecom in person.get("telecom") or []:
        value = str(telecom.get("value") or "").strip()
        ended = str((telecom.get("period") or {}).get("end") or "")
        if telecom.get("system") != "email" or telecom.get("use") == "old" or not value or "@" not in value:
            continue
        if ended and ended[:10] < now.date().isoformat():
            continue
        return value
    return None
