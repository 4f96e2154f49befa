"""The engine port: what every storage engine provides, in engine-neutral terms.

An engine holds tenants; each tenant is its own database (a SQLite file, a MongoDB database).
A tenant store keeps every version of every resource (versioning, http.html#history),
the typed search index rows of each current version, and the outbox of committed events.
Writes happen inside a transaction; the events appended in it commit with it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from fhir_server.storage.query import RecordQuery, SearchQuery


class TenantUnknownError(LookupError):
    """No tenant of that name exists."""


@dataclass(frozen=True, slots=True)
class ResourceKey:
    resource_type: str
    id: str


@dataclass(frozen=True, slots=True)
class ResourceVersion:
    """One version of a resource as stored. ``content`` is the JSON, None for a delete tombstone."""

    resource_type: str
    id: str
    version: int
    last_updated: str  # FHIR instant, UTC
    content: bytes | None
    method: str = "PUT"  # POST | PUT | PATCH | DELETE: how this version came to be (history bundles)

    @property
    def deleted(self) -> bool:
        return self.content is None

    @property
    def key(self) -> ResourceKey:
        return ResourceKey(self.resource_type, self.id)


@dataclass(frozen=True, slots=True)
class TokenRow:
    param: str
    system: str | None
    code: str | None
    text: str | None = None
    group: int | None = None


@dataclass(frozen=True, slots=True)
class StringRow:
    param: str
    normalized: str
    exact: str
    group: int | None = None


@dataclass(frozen=True, slots=True)
class RangeRow:
    """A date (epoch seconds), number or quantity value as the closed-open range [low, high)."""

    param: str
    low: float
    high: float
    system: str | None = None
    code: str | None = None
    group: int | None = None


@dataclass(frozen=True, slots=True)
class ReferenceRow:
    param: str
    target_type: str | None
    target_id: str | None
    url: str | None = None  # absolute or canonical target, also Reference.identifier as system|value
    group: int | None = None


@dataclass(frozen=True, slots=True)
class UriRow:
    param: str
    value: str
    group: int | None = None


@dataclass(slots=True)
class IndexEntries:
    """The search index rows of one resource version, by kind."""

    tokens: list[TokenRow] = field(default_factory=list)
    strings: list[StringRow] = field(default_factory=list)
    dates: list[RangeRow] = field(default_factory=list)
    numbers: list[RangeRow] = field(default_factory=list)
    quantities: list[RangeRow] = field(default_factory=list)
    references: list[ReferenceRow] = field(default_factory=list)
    uris: list[UriRow] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """History of one resource, one type or the whole tenant (http.html#history)."""

    resource_type: str | None = None
    id: str | None = None
    since: str | None = None  # FHIR instant: only versions last updated at or after
    at_most_before: str | None = None  # _at / snapshot upper bound (exclusive)
    count: int = 50
    offset: int = 0


@dataclass(frozen=True, slots=True)
class HistoryPage:
    versions: list[ResourceVersion]
    total: int


@dataclass(frozen=True, slots=True)
class SearchPage:
    keys: list[ResourceKey]
    total: int | None
    snapshot: int  # pass back in SearchQuery.snapshot for the next pages of the same search


@dataclass(frozen=True, slots=True)
class Record:
    """A keyed document of some collection, found by its (multi-valued) string fields."""

    collection: str
    key: str
    body: bytes
    fields: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AuditLink:
    """One link of a tenant's audit hash chain: chain = sha256(previous chain + sha256(content))."""

    seq: int
    resource_id: str
    content_hash: str
    chain_hash: str


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """A server-built AuditEvent: stored and chained durably first, searchable once indexed.

    ``content`` is the stored JSON (None when a stored event can no longer be opened); ``seq`` is 0
    until the chain has given the entry its place."""

    seq: int
    resource_id: str
    last_updated: str
    content: bytes | None
    content_hash: str


@dataclass(frozen=True, slots=True)
class AuditCheckpoint:
    """A signed head of the trail: the chain up to ``seq`` (its hash ``chain_hash``) and, for heads
    (``signed_at`` set; older checkpoints have None), the staging log up to ``staged_seq``, of
    which everything up to ``loaded_seq`` was loaded into the chain."""

    seq: int
    chain_hash: str
    signature: bytes
    algorithm: str
    key_id: str
    staged_seq: int | None = None
    loaded_seq: int | None = None
    signed_at: str | None = None


@dataclass(frozen=True, slots=True)
class AuditStaging:
    """How far the staging log goes: every seq up to ``staged_seq`` was given to an event, those up to
    ``loaded_seq`` were loaded into the chain."""

    loaded_seq: int
    staged_seq: int


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    seq: int
    topic: str
    payload: dict[str, Any]
    attempts: int


class TenantReader(Protocol):
    async def read(self, resource_type: str, id: str) -> ResourceVersion | None:
        """The current version (a tombstone when deleted), None when it never existed."""
        ...

    async def read_many(self, keys: Sequence[ResourceKey]) -> list[ResourceVersion]:
        """Current, non-deleted versions of the keys that exist, in the order asked."""
        ...

    async def search(self, query: SearchQuery) -> SearchPage:
        """Keys of the current resources that match, sorted and paged as the query says."""
        ...

    async def search_versions(self, query: SearchQuery) -> list[ResourceVersion]:
        """The matching current versions themselves (one page, no total): search and read at once."""
        ...

    async def get_record(self, collection: str, key: str) -> Record | None: ...

    async def find_records(self, query: RecordQuery) -> list[Record]:
        """Records matching every field match, ordered by key."""
        ...


class TenantTransaction(TenantReader, Protocol):
    """One atomic unit of writes. Reads inside it see its own writes."""

    first_written: ResourceVersion | None  # the first version written, as the caller gave it (None: none yet)

    async def write(self, version: ResourceVersion, index: IndexEntries | None) -> None:
        """Append a version and make it current; ``index`` replaces the resource's index rows."""
        ...

    async def append_event(self, topic: str, payload: dict[str, Any]) -> None:
        """Add an outbox event that becomes visible when (and only if) this transaction commits."""
        ...

    async def put_record(self, record: Record) -> None:
        """Insert or replace the record with this collection and key."""
        ...

    async def chain_audit(self, resource_id: str, content: bytes) -> None:
        """Append the AuditEvent's content hash to the tenant's audit chain, in this transaction."""
        ...

    async def append_audit(self, entry: AuditEntry) -> None:
        """``TenantStore.append_audit`` in this transaction: the event commits with its writes."""
        ...

    async def delete_record(self, collection: str, key: str) -> None: ...


class TenantStore(TenantReader, Protocol):
    name: str

    async def vread(self, resource_type: str, id: str, version: int) -> ResourceVersion | None: ...

    async def history(self, query: HistoryQuery) -> HistoryPage: ...

    def transaction(self) -> AbstractAsyncContextManager[TenantTransaction]:
        """Serialised, atomic and durable once the context exits without error."""
        ...

    async def claim_events(self, consumer: str, limit: int, lease_seconds: float) -> list[OutboxEvent]:
        """Lease up to ``limit`` events the consumer has not acknowledged and nobody else holds."""
        ...

    async def ack_event(self, consumer: str, seq: int) -> None: ...

    async def ack_events(self, consumer: str, seqs: Sequence[int]) -> None:
        """Acknowledge several events in one write (a consumer skipping topics it does not handle)."""
        ...

    async def defer_event(self, consumer: str, seq: int, seconds: float) -> None:
        """Keep a claimed, unacknowledged event from redelivery for ``seconds`` (a retry's back-off)."""
        ...

    async def audit_links(self, after_seq: int, limit: int) -> list[AuditLink]: ...

    async def append_audit(self, entry: AuditEntry) -> None:
        """Stage one finished AuditEvent (version 1), durably (it joins a group commit).

        It is read, searched and chained once ``load_audit`` has moved it into the store."""
        ...

    async def staged_audit(self, after_seq: int, limit: int) -> list[AuditEntry]:
        """Staged AuditEvents not yet loaded, in the order they were staged (``seq`` is their place there)."""
        ...

    async def load_audit(self, items: Sequence[tuple[int, IndexEntries | None]]) -> int:
        """Store, chain and index staged AuditEvents (by staging seq) in one transaction, then
        drop them from the staging log. Entries None: stored and chained without index rows.

        Events stored already (another process loaded them) are skipped; returns how many were loaded."""
        ...

    async def pending_audit(self, after_seq: int, limit: int) -> list[AuditEntry]:
        """Stored AuditEvents without their index rows yet, in chain order (those written in a transaction)."""
        ...

    async def index_audit(self, items: Sequence[tuple[int, IndexEntries | None]]) -> int:
        """Add the index rows of AuditEvents (by chain seq) in one transaction; None: left unindexed.

        Events another process has indexed already are skipped; returns how many were indexed."""
        ...

    async def add_audit_checkpoint(self, checkpoint: AuditCheckpoint) -> None:
        """Keep a signed head; of two at the same chain seq, the one covering more of the staging log."""
        ...

    async def audit_checkpoints(self) -> list[AuditCheckpoint]: ...

    async def latest_audit_checkpoint(self) -> AuditCheckpoint | None:
        """The head with the highest chain seq (then staging seq)."""
        ...

    async def audit_staging(self) -> AuditStaging: ...

    async def audit_staged_seqs(self, low: int, high: int) -> set[int]:
        """The staging seqs in (low, high] still staged or loaded into the chain."""
        ...

    async def scrub(self) -> None:
        """Make deleted rows unrecoverable from the store's files (after an erasure)."""
        ...


class Engine(Protocol):
    """Tenants and their stores."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def create_tenant(self, name: str) -> None: ...

    async def tenant_names(self) -> list[str]: ...

    async def tenant(self, name: str) -> TenantStore:
        """The tenant's store; raises TenantUnknownError."""
        ...

    def add_commit_listener(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(tenant)`` after each commit that appended outbox events (in-process wake-ups)."""
        ...
