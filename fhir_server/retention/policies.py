"""Retention policies of one tenant: per resource type, how many days a resource is kept after its last
update, and what happens then. Stored as records of the tenant's own database (collection
``retention-policy``, one per type), so each tenant has its own and a copy of the database carries them.

The one action is ``delete``: the normal FHIR delete (http.html#delete), a versioned tombstone, so the
resource answers 410 and leaves search; its history is kept. (Purging history is not offered: the store
has no history purge that keeps the audit chain and the erasure markers consistent.)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import orjson

from fhir_server.definitions import resource_types
from fhir_server.storage.port import Record, TenantReader, TenantStore
from fhir_server.storage.query import RecordQuery

COLLECTION = "retention-policy"
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


async def set_policy(store: TenantStore, policy: RetentionPolicy) -> None:
    async with store.transaction() as tx:
        await tx.put_record(Record(COLLECTION, policy.resource_type, orjson.dumps(asdict(policy))))


async def remove_policy(store: TenantStore, resource_type: str) -> None:
    async with store.transaction() as tx:
        await tx.delete_record(COLLECTION, resource_type)


async def list_policies(reader: TenantReader) -> list[RetentionPolicy]:
    """The tenant's policies, by resource type."""
    found = await reader.find_records(RecordQuery(COLLECTION))
    return [RetentionPolicy(**orjson.loads(record.body)) for record in found]
