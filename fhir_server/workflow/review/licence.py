"""A review tier's licence requirement: the reviewer holds a current licence to practise in a jurisdiction.

The licence is a ``Practitioner.qualification`` (practitioner.html#Practitioner.qualification: "certification,
licenses, or training pertaining to the provision of care"): its ``code`` says what it is, its ``period``
when it is valid (the end is its expiry), its ``issuer`` the licensing body, an ``Organization`` whose
``address`` is where the licence holds. R4 has no jurisdiction on a qualification, and the licensing body's
jurisdiction is where its licences are valid (a national regulator: its country; a US state board: its
state), so the jurisdiction is read from the issuer::

    "licence": {"codes": ["http://terminology.hl7.org/CodeSystem/v2-0360|MD"], "jurisdictions": ["GB", "US-CA"]}

``codes`` (``system|code``, any of them; none: any qualification) and ``jurisdictions`` (ISO 3166-1 alpha-2
country, or country-subdivision as ISO 3166-2 writes it; none: anywhere): a qualification qualifies when its
code and its issuer's address (``country``, and ``state`` for a subdivision) match. It must be current now;
a qualifying licence that expired, or that is not valid yet, is named in the 403.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fhir_server.repository import Repository
from fhir_server.workflow.review.periods import refusal_of

MAX_QUALIFICATIONS = 50  # of one Practitioner, looked at
MAX_LISTED = 20  # codes or jurisdictions of one requirement
JURISDICTION = re.compile(r"^[A-Z]{2}(-[A-Z0-9]{1,3})?$")  # ISO 3166-1 alpha-2, or ISO 3166-2


class LicenceRequirementError(ValueError):
    """A licence requirement that cannot be applied."""


@dataclass(frozen=True, slots=True)
class LicenceRequirement:
    codes: tuple[str, ...] = ()  # "system|code" of Practitioner.qualification.code
    jurisdictions: tuple[str, ...] = ()  # "GB", "US-CA"

    def describe(self) -> str:
        what = f"a qualification coded {' or '.join(self.codes)}" if self.codes else "a qualification"
        return what + (f" issued in {' or '.join(self.jurisdictions)}" if self.jurisdictions else "")


def parse_requirement(tier: str, spec: Any) -> LicenceRequirement | None:
    """A tier's ``licence`` (None: the tier needs none); LicenceRequirementError when malformed."""
    if spec is None:
        return None
    if not isinstance(spec, dict) or not set(spec) <= {"codes", "jurisdictions"}:
        raise LicenceRequirementError(f"tier {tier}: licence is an object of codes and jurisdictions")
    codes, places = spec.get("codes", []), spec.get("jurisdictions", [])
    if not isinstance(codes, list) or len(codes) > MAX_LISTED or not all(_coding(c) for c in codes):
        raise LicenceRequirementError(f"tier {tier}: licence codes are at most {MAX_LISTED} 'system|code' strings")
    if not isinstance(places, list) or len(places) > MAX_LISTED or not all(_place(p) for p in places):
        raise LicenceRequirementError(f"tier {tier}: licence jurisdictions are at most {MAX_LISTED} ISO 3166 codes "
                                      "('GB', 'US-CA')")  # fmt: skip
    if not codes and not places:
        raise LicenceRequirementError(f"tier {tier}: a licence requirement names codes, jurisdictions or both")
    return LicenceRequirement(tuple(codes), tuple(places))


def _coding(value: Any) -> bool:
    return isinstance(value, str) and "|" in value and 2 < len(value) <= 300


def _place(value: Any) -> bool:
    return isinstance(value, str) and bool(JURISDICTION.match(value))


def _codes(qualification: dict[str, Any]) -> set[str]:
    codings = (qualification.get("code") or {}).get("coding") or []
    return {f"{c.get('system')}|{c.get('code')}" for c in codings if isinstance(c, dict)}


def _places(issuer: dict[str, Any] | None) -> set[str]:
    places: set[str] = set()
    for address in (issuer or {}).get("address") or []:
        country = str(address.get("country") or "").upper()
        if country:
            places.add(country)
            if address.get("state"):
                places.add(f"{country}-{str(address['state']).upper()}")
    return places


def _name(practitioner: str, n: int, qualification: dict[str, Any]) -> str:
    codes = ", ".join(sorted(_codes(qualification))) or "no code"
    issuer = ((qualification.get("issuer") or {}).get("reference")) or "no issuer"
    return f"{practitioner} qualification[{n}] ({codes}, issued by {issuer})"


async def licence_refusal(
    repo: Repository, practitioner: str, person: dict[str, Any], requirement: LicenceRequirement, now: datetime
) -> str | None:
    """None when ``person`` holds a current licence that meets ``requirement``; else why not (for a 403)."""
    lapsed: list[str] = []
    issuers: dict[str, dict[str, Any] | None] = {}
    for n, qualification in enumerate((person.get("qualification") or [])[:MAX_QUALIFICATIONS]):
        if not isinstance(qualification, dict):
            continue
        if requirement.codes and not _codes(qualification) & set(requirement.codes):
            continue
        if requirement.jurisdictions:
            issuer = str((qualification.get("issuer") or {}).get("reference") or "")
            if issuer not in issuers:
                kind, _, id = issuer.partition("/")
                issuers[issuer] = await repo.current("Organization", id) if kind == "Organization" and id else None
            if not _places(issuers[issuer]) & set(requirement.jurisdictions):
                continue
        why = refusal_of(qualification.get("period"), "the licence", "Practitioner.qualification.period", now)
        if why is None:
            return None
        lapsed.append(f"{_name(practitioner, n, qualification)}: {why}")
    if lapsed:
        return "; ".join(lapsed)
    return f"{practitioner} holds no licence the tier requires ({requirement.describe()})"
