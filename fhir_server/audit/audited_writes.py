"""A request's AuditEvent committed with its first write: no write is durable without its record.

The REST layer records an interaction's AuditEvent once it has the answer, before sending it (every
acknowledged interaction is audited). A write commits before that, though: a crash in between would
leave a durable write with no AuditEvent. So the tenant store a request's repository writes through
is wrapped: the first transaction that writes appends the interaction's AuditEvent (outcome
success: it is the commit that makes the write happen) in the same transaction (``record_in``),
and the REST layer then records nothing more. Requests that write nothing are recorded as before.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, cast

import orjson

from fhir_server.storage.port import ResourceVersion, TenantStore, TenantTransaction

if TYPE_CHECKING:
    from fhir_server.audit.trail import AuditTrail

Describe = Callable[[ResourceVersion], dict[str, Any]]  # the interaction's AuditEvent, given its first write


class AuditedWrites:
    """``store`` for one request: ``describe`` builds its AuditEvent when a transaction first writes."""

    def __init__(self, store: TenantStore, trail: AuditTrail) -> None:
        self._store = store
        self.trail = trail
        self.describe: Describe | None = None
        self.recorded = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    @staticmethod
    def unwrap(store: TenantStore) -> TenantStore:
        """The store itself, for code that needs its engine's own type (``$erase``: the keyring)."""
        return store._store if isinstance(store, AuditedWrites) else store

    @property
    def store(self) -> TenantStore:
        """This wrapper, typed as the store it wraps (what the repository takes)."""
        return cast(TenantStore, self)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[TenantTransaction]:
        audits = False
        async with self._store.transaction() as tx:
            yield tx
            first = tx.first_written
            if first is not None and self.describe is not None and not self.recorded:
                await self.trail.record_in(self._store, tx, self.describe(first))
                audits = True
        self.recorded = self.recorded or audits  # committed: a failed commit leaves the REST layer to record


def written_resource(version: ResourceVersion) -> dict[str, Any] | None:
    """The resource a version holds, for the patient it concerns (None: a tombstone)."""
    if version.content is None:
        return None
    resource: dict[str, Any] = orjson.loads(version.content)
    return resource
