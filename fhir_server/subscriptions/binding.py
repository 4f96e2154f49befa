"""Who may bind a Subscription on a websocket (R4 subscription.html, channel "websocket", and #security:
a client learns of matches only for what it was allowed to subscribe to).

A ``bind {id}`` names a Subscription of the socket's own tenant whose channel is ``websocket``, that is
``active`` and not past its ``end``, and that the socket's token owns: the same client (and, for an
external provider's subject, the same issuer) as the owner recorded when it was written (``owner``).
Anything else is refused alike ("no such websocket Subscription of yours"), so a refusal does not
reveal whether another client's Subscription exists. With authentication off (the explicit insecure
development mode) every Subscription of the tenant may be bound.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fhir_server.repository import Repository
from fhir_server.security.scopes import Access
from fhir_server.storage.port import TenantStore
from fhir_server.subscriptions.owner import owner_client_id, owner_issuer

ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")  # datatypes.html#id


class BindRefused(Exception):
    """A ``bind`` the socket may not make; ``status`` is the HTTP-like code of the ``error`` message."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True, slots=True)
class Bound:
    subscription_id: str
    end: datetime | None


async def check_bind(store: TenantStore, access: Access | None, subscription_id: str, now: datetime) -> Bound:
    """The Subscription ``subscription_id`` if ``access`` may bind it now; ``BindRefused`` otherwise."""
    if not ID.match(subscription_id):
        raise BindRefused(400, "bind takes a Subscription id: bind {id}")
    system = Repository.system(store, reason="websocket bind: the owner check")
    resource = await system.current("Subscription", subscription_id)
    if resource is None or not _owned(resource, access):
        raise BindRefused(404, f"no websocket Subscription {subscription_id} of yours")
    if (resource.get("channel") or {}).get("type") != "websocket":
        raise BindRefused(400, f"Subscription {subscription_id} does not have a websocket channel")
    end = _end(resource)
    if resource.get("status") != "active" or (end is not None and end <= now):
        raise BindRefused(409, f"Subscription {subscription_id} is not active (status {resource.get('status')})")
    return Bound(subscription_id, end)


def _owned(resource: dict[str, Any], access: Access | None) -> bool:
    if access is None:
        return True
    return owner_client_id(resource) == access.subject and owner_issuer(resource) == access.issuer


def _end(resource: dict[str, Any]) -> datetime | None:
    try:
        return datetime.fromisoformat(str(resource["end"])) if resource.get("end") else None
    except ValueError:
        return None
