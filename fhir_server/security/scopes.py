"""SMART App Launch v2 scopes (scopes-and-launch-context.html) and what an access token may do.

A resource scope is ``context/Type.perms``: context ``system``, ``user`` or ``patient``; ``Type`` a
resource type or ``*``; perms a subset of ``cruds`` in that order. The v1 forms ``.read`` (= ``rs``),
``.write`` (= ``cud``) and ``.*`` (= ``cruds``) are read as their v2 equivalents. Scopes with a
query (``patient/Observation.rs?category=...``) are never granted: the server does not narrow by
search parameters, and granting the unnarrowed scope would give more than was asked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

Permission = Literal["c", "r", "u", "d", "s"]
ORDER = "cruds"
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
_SCOPE = re.compile(r"^(patient|user|system)/([A-Za-z]+|\*)\.([a-z*]+)$")


@dataclass(frozen=True, slots=True)
class Scope:
    context: str  # system | user | patient
    resource_type: str  # a type or "*"
    permissions: str  # a subset of "cruds", in that order

    def __str__(self) -> str:
        return f"{self.context}/{self.resource_type}.{self.permissions}"

    def covers(self, other: Scope) -> bool:
        """Whether this scope grants everything ``other`` asks for."""
        return (
            self.context == other.context
            and self.resource_type in ("*", other.resource_type)
            and set(other.permissions) <= set(self.permissions)
        )


def parse_scope(text: str) -> Scope | None:
    """The resource scope ``text`` names, or None for other scopes (openid, launch/patient...)."""
    match = _SCOPE.match(text)
    if match is None:
        return None
    context, resource_type, perms = match.groups()
    perms = _V1.get(perms, perms)
    if not perms or any(p not in ORDER for p in perms) or list(perms) != sorted(perms, key=ORDER.index):
        return None
    if len(set(perms)) != len(perms):
        return None
    return Scope(context, resource_type, perms)


def parse_scopes(text: str) -> list[Scope]:
    return [s for s in (parse_scope(part) for part in text.split()) if s is not None]


def grant(requested: str | None, allowed: list[Scope]) -> list[Scope]:
    """The scopes a token gets: each requested scope narrowed to what the allowed scopes give; all
    allowed if none asked.

    RFC 6749 section 3.3 lets the server issue less than was asked, and SMART clients ask broadly
    (fhirclient's default is ``user/*.* patient/*.read openid profile``): ``user/*.cruds`` asked by
    a client allowed ``user/*.rs`` gets ``user/*.rs``. A ``system/`` scope also answers a ``user/``
    request (this server bounds neither to a patient); nothing answers a ``patient/`` request but a
    ``patient/`` scope, since client credentials carry no patient.
    """
    if requested is None or not requested.strip():
        return list(allowed)
    granted: list[Scope] = []
    for scope in parse_scopes(requested):
        for narrowed in (_narrow(scope, a) for a in allowed):
            if narrowed is not None and narrowed not in granted:
                granted.append(narrowed)
    return [s for s in granted if not any(o != s and o.covers(s) for o in granted)]


def _narrow(requested: Scope, allowed: Scope) -> Scope | None:
    """The part of ``requested`` that ``allowed`` gives, in the requested context, or None."""
    if allowed.context != requested.context and (allowed.context, requested.context) != ("system", "user"):
        return None
    if "*" not in (allowed.resource_type, requested.resource_type) and allowed.resource_type != requested.resource_type:
        return None
    resource_type = requested.resource_type if allowed.resource_type == "*" else allowed.resource_type
    permissions = "".join(p for p in ORDER if p in requested.permissions and p in allowed.permissions)
    return Scope(requested.context, resource_type, permissions) if permissions else None


# Roles map to the scopes a client or user holding them may ask for.
ROLES: dict[str, tuple[str, ...]] = {
    "admin": ("system/*.cruds",),
    "integration": ("system/*.cruds",),
    "clinician-reviewer": (
        "user/*.rs",
        "user/DiagnosticReport.cruds",
        "user/Observation.cruds",
        "user/Consent.cruds",
        "user/Task.cruds",
        "user/Communication.cruds",
    ),
    "inference": (
        "system/*.rs",
        "system/Observation.cruds",
        "system/Provenance.cruds",
        "system/Media.cruds",
        "system/Binary.cruds",
        "system/Device.cruds",
        "system/DiagnosticReport.cruds",
    ),
    "auditor": ("system/AuditEvent.rs",),
    "imaging-device": ("system/ImagingStudy.crs",),
}


def role_scopes(roles: tuple[str, ...] | list[str]) -> list[Scope]:
    scopes: list[Scope] = []
    for role in roles:
        for text in ROLES[role]:
            scope = parse_scope(text)
            assert scope is not None, text
            if scope not in scopes:
                scopes.append(scope)
    return scopes


@dataclass(frozen=True, slots=True)
class Access:
    """What the bearer of one verified access token may do in one tenant."""

    tenant: str
    subject: str  # the client id, or the user's subject for tokens of an external provider
    scopes: tuple[Scope, ...]
    patient: str | None = None  # the launch context patient id of patient/ scopes
    roles: tuple[str, ...] = field(default_factory=tuple)
    issuer: str | None = None  # an external provider's issuer; None: this server's own tokens (registered clients)
    fhir_user: str | None = None  # the SMART ``fhirUser`` claim: the user's own resource (``Practitioner/123``)

    def decide(self, resource_type: str, permission: Permission) -> Literal["all", "patient", "none"]:
        """``all``: any instance; ``patient``: only the context patient's compartment; ``none``."""
        granted_by = {
            s.context for s in self.scopes if s.resource_type in ("*", resource_type) and permission in s.permissions
        }
        if granted_by & {"system", "user"}:
            return "all"
        if "patient" in granted_by and self.patient:
            return "patient"
        return "none"

    @property
    def scope_text(self) -> str:
        return " ".join(str(s) for s in self.scopes)
