"""The owner of a Subscription: the client whose token created or last updated it.

Owners that are not registered clients (an external provider's subject, recorded with its
``issuer``) cannot be revoked here, so their grant ends at ``authorised-until`` (the lifetime cap
when it was written): the worker then turns the Subscription off until the owner writes it again.

Kept in a server-managed extension (``OWNER_URL``): a client's own value is always replaced. The
delivery worker evaluates criteria through a ``Repository`` built with the owner's
``AccessPolicy``, so a Subscription never reveals what its owner's scopes do not allow
(subscription.html#security: "the server SHALL only deliver what the subscriber may see").
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fhir_server.security.policy import AccessPolicy
from fhir_server.security.scopes import Access, parse_scopes

OWNER_URL = "urn:dermbridge:fhir:StructureDefinition:subscription-owner"


def stamp(resource: dict[str, Any], policy: AccessPolicy, authorised_until: datetime | None = None) -> None:
    """Record ``policy`` (the writer's) as the owner, replacing any owner extension sent."""
    access = policy.access
    if access is None:
        parts = [{"url": "system", "valueString": policy.system_reason or "system"}]
    else:
        parts = [{"url": "client", "valueString": access.subject}, {"url": "scope", "valueString": access.scope_text}]
        parts += [{"url": "role", "valueString": role} for role in access.roles]
        if access.patient:
            parts.append({"url": "patient", "valueString": access.patient})
        if access.issuer:
            parts.append({"url": "issuer", "valueString": access.issuer})
    if authorised_until is not None:
        parts.append({"url": "authorised-until", "valueString": authorised_until.isoformat()})
    others = [e for e in resource.get("extension") or [] if not (isinstance(e, dict) and e.get("url") == OWNER_URL)]
    resource["extension"] = [*others, {"url": OWNER_URL, "extension": parts}]


def owner_policy(resource: dict[str, Any], tenant: str) -> AccessPolicy:
    """The policy a Subscription's matches are evaluated under; no owner recorded: no scope at all."""
    owner = next((e for e in resource.get("extension") or [] if e.get("url") == OWNER_URL), None)
    if owner is None:
        return AccessPolicy.nobody()
    values: dict[str, list[str]] = {}
    for part in owner.get("extension") or []:
        values.setdefault(str(part.get("url")), []).append(str(part.get("valueString") or ""))
    if "system" in values:
        return AccessPolicy.system(f"subscription owned by the system context: {values['system'][0]}")
    access = Access(
        tenant=tenant,
        subject=(values.get("client") or [""])[0],
        scopes=tuple(parse_scopes((values.get("scope") or [""])[0])),
        patient=values["patient"][0] if values.get("patient") else None,
        roles=tuple(values.get("role") or ()),
    )
    return AccessPolicy.of(access)


def _parts(resource: dict[str, Any]) -> dict[str, str]:
    owner: dict[str, Any] = next((e for e in resource.get("extension") or [] if e.get("url") == OWNER_URL), {})
    return {str(p.get("url")): str(p.get("valueString")) for p in owner.get("extension") or []}


def owner_client(resource: dict[str, Any]) -> str:
    """The owning client's id (for audit), or a description of the system context."""
    parts = _parts(resource)
    return parts.get("client") or f"system ({parts.get('system', 'unknown')})"


def owner_client_id(resource: dict[str, Any]) -> str | None:
    """The owning client's id; None when the system context wrote it."""
    return _parts(resource).get("client")


def owner_issuer(resource: dict[str, Any]) -> str | None:
    """The external provider that vouched for the owner; None for registered clients and the system."""
    return _parts(resource).get("issuer")


def reauthorisation_due(resource: dict[str, Any], now: datetime) -> bool:
    """An external provider's subject whose grant reached ``authorised-until`` (or never recorded one)."""
    if owner_issuer(resource) is None:
        return False
    until = _parts(resource).get("authorised-until")
    try:
        return until is None or datetime.fromisoformat(until) <= now
    except ValueError:
        return True
