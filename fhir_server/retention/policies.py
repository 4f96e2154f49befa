"""Retention policies of one tenant: per resource type, how many days a resource is kept after its last
update, and what happens then. Stored as records of the tenant's own database (collection
``retention-policy``, one per type), so each tenant has its own and a copy of the database carries them.

The one action is ``delete``: the normal FHIR delete (http.html#delete), a versioned tombstone, so the
resource answers 410 and leaves search; its history is kept. (Purging history is not offered: the store
has no history purge that keeps the audit chain and the erasure markers consistent.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from fhir_server.definitions import resource_types
from fhir_server.storage.port import TenantReader, TenantStore
from fhir_server.tenant_settings import read_setting, write_setting

SETTING = "retention.policies"
Action = Literal["delete"]
ACTIONS: tuple[Action, ...] = ("delete",)
NEVER = frozenset({"AuditEvent", "Flag"})  # the audit trail is append-only; legal holds are the record of a hold
MAX_DAYS = 365 * 200


class PolicyError(ValueError):
    """A retention policy that cannot be kept (unknown type, bad days or action)."""


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    resource_type: str
    days: int
    action: Action = "delete"

    def __post_init__(self) -> None:
        if self.resource_type not in resource_types():
            raise PolicyError(f"{self.resource_type!r} is not an R4 resource type")
        if self.resource_type in NEVER:
            raise PolicyError(f"{self.resource_type} is never deleted by retention")
        if not 1 <= self.days <= MAX_DAYS:
            raise PolicyError(f"days must be between 1 and {MAX_DAYS}")
        if self.action not in ACTIONS:
            raise PolicyError(f"action must be one of {', '.join(ACTIONS)}")


async def set_policy(store: TenantStore, policy: RetentionPolicy) -> list[RetentionPolicy]:
    """Keep (or replace) the policy of its type; returns the tenant's policies now."""
    return await _change(store, policy.resource_type, {"days": policy.days, "action": policy.action})


async def remove_policy(store: TenantStore, resource_type: str) -> list[RetentionPolicy]:
    return await _change(store, resource_type, None)


async def list_policies(reader: TenantReader) -> list[RetentionPolicy]:
    """The tenant's policies, by resource type."""
    return _parse(await read_setting(reader, SETTING))


async def _change(store: TenantStore, resource_type: str, value: dict[str, Any] | None) -> list[RetentionPolicy]:
    current = dict(await read_setting(store, SETTING) or {})
    if value is None:
        current.pop(resource_type, None)
    else:
        current[resource_type] = value
    await write_setting(store, SETTING, current or None)
    return _parse(current)


def _parse(value: Any) -> list[RetentionPolicy]:
    if not isinstance(value, dict):
        return []
    return [RetentionPolicy(t, int(v["days"]), v.get("action", "delete")) for t, v in sorted(value.items())]
