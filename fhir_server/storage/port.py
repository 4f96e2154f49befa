"""The engine port: what every storage engine provides, in engine-neutral terms.

An engine holds tenants; each tenant is its own database (a SQLite file, a PostgreSQL schema).
A tenant's storage is a few small protocols: resources and search (every version of every resource,
http.html#history, and the typed search index rows of each current version), records, the outbox of
committed events, and the audit log; ``TenantStore`` is their union. Writes happen inside a
transaction; the events and records written in it commit with it. Encryption is a declared
capability (``TenantReader.encryption``), not an engine type.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from collections.abc import Set as AbstractSet
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
    staged_seq: int | None = None  # the intake seq it was loaded from (None: chained at once)


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


AuditIndexer = Callable[[AuditEntry], Awaitable[IndexEntries | None]]
"""The index rows of a recorded AuditEvent (None: it cannot be read; it is kept chained but unindexed)."""


class Encryption(Protocol):
    """Envelope encryption, a capability a store declares (``encryption``) rather than a type callers test:
    any engine wrapped in ``fhir_server.crypto.store`` offers it; an engine storing plaintext has None."""

    @property
    def erased(self) -> AbstractSet[str]:
        """The subjects (``Patient/{id}``) whose data keys were destroyed (GDPR Art. 17)."""
        ...

    async def open_secret(self, sealed: dict[str, str], context: bytes) -> bytes | None:
        """A secret sealed by ``TransactionEncryption.seal_secret``; None once its subject is erased."""
        ...

    async def erase(self, tx: TenantTransaction, ref: str) -> None:
        """Destroy ``ref``'s data key in ``tx``: what was sealed under it can never be opened again."""
        ...


class TransactionEncryption(Encryption, Protocol):
    """The capability inside a transaction: sealing, with any new data key committed with it."""

    async def seal_secret(self, ref: str, secret: bytes, context: bytes) -> dict[str, str]:
        """``secret`` (e.g. a DICOM object's own key) sealed under ``ref``'s data key."""
        ...


class ResourceReader(Protocol):
    """Reading current resources and searching them (http.html#read, search.html)."""

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


class RecordReader(Protocol):
    """Records: keyed documents of a collection (DICOM instances, keys, settings), found by their fields."""

    async def get_record(self, collection: str, key: str) -> Record | None: ...

    async def find_records(self, query: RecordQuery) -> list[Record]:
        """Records matching every field match, ordered by key."""
        ...


class RecordStore(RecordReader, Protocol):
    async def record_collections(self) -> list[str]:
        """Every collection holding a record, sorted (what a copy of the tenant walks)."""
        ...


class RecordWriter(Protocol):
    async def put_record(self, record: Record) -> None:
        """Insert or replace the record with this collection and key."""
        ...

    async def delete_record(self, collection: str, key: str) -> None: ...


class TenantReader(ResourceReader, RecordReader, Protocol):
    """What a store and its transactions both read, and whether they encrypt (``encryption``)."""

    @property
    def encryption(self) -> Encryption | None: ...


class TenantTransaction(TenantReader, RecordWriter, Protocol):
    """One atomic unit of writes: resource versions, records, outbox events and AuditEvents commit
    together or not at all. Reads inside it see its own writes."""

    first_written: ResourceVersion | None  # the first version written, as the caller gave it (None: none yet)

    @property
    def encryption(self) -> TransactionEncryption | None: ...

    async def write(self, version: ResourceVersion, index: IndexEntries | None) -> None:
        """Append a version and make it current; ``index`` replaces the resource's index rows."""
        ...

    async def append_event(self, topic: str, payload: dict[str, Any]) -> None:
        """Add an outbox event that becomes visible when (and only if) this transaction commits."""
        ...

    async def chain_audit(self, resource_id: str, content: bytes) -> None:
        """Append the AuditEvent's content hash to the tenant's audit chain, in this transaction."""
        ...

    async def append_audit(self, entry: AuditEntry) -> None:
        """``AuditLog.append_audit`` in this transaction: the event is stored and chained with its writes
        (indexed by the next ``settle_audit``). A nonzero ``entry.seq`` is the intake seq the event had
        where it was first recorded (``dermbridge storage copy`` keeps it: the signed heads cover it)."""
        ...


class ResourceStore(ResourceReader, Protocol):
    """Versioned resources (http.html#vread, #history) and the transactions that write them."""

    name: str

    async def vread(self, resource_type: str, id: str, version: int) -> ResourceVersion | None: ...

    async def history(self, query: HistoryQuery) -> HistoryPage: ...

    def transaction(self) -> AbstractAsyncContextManager[TenantTransaction]:
        """Serialised, atomic and durable once the context exits without error."""
        ...

    async def scrub(self) -> None:
        """Make deleted rows unrecoverable from the store's files and logs (after an erasure)."""
        ...


class Outbox(Protocol):
    """The committed events (appended by ``TenantTransaction.append_event``), delivered at least once to
    each consumer under a lease."""

    name: str

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


class AuditLog(Protocol):
    """A tenant's AuditEvents, hash-chained (``AuditLink``) with signed heads (``AuditCheckpoint``).

    ``append_audit`` records an event durably. An engine may first take it into an *intake* (SQLite: a
    staging log of its own, so that recording never waits for the database's write lock), numbered by
    intake seq, and move it into the chain later; ``settle_audit`` does that and indexes what is
    chained but not yet searchable. An engine that chains at once has an empty intake: ``staged_audit``
    is empty, ``audit_staging`` is (0, 0) and ``audit_staged_seqs`` is empty."""

    name: str

    async def append_audit(self, entry: AuditEntry) -> None:
        """Record one finished AuditEvent (version 1), durably; it is read, searched and chained once settled."""
        ...

    async def settle_audit(self, indexer: AuditIndexer, batch: int) -> int:
        """Store and chain every event of the intake, and index every chained event not yet indexed, in
        transactions of at most ``batch`` events; ``indexer`` gives each event's index rows.

        Events another process settled meanwhile are skipped; returns how many this call settled."""
        ...

    async def staged_audit(self, after_seq: int, limit: int) -> list[AuditEntry]:
        """Events in the intake, not yet chained, in intake order (``seq`` is their intake seq)."""
        ...

    async def audit_links(self, after_seq: int, limit: int) -> list[AuditLink]: ...

    async def add_audit_checkpoint(self, checkpoint: AuditCheckpoint) -> None:
        """Keep a signed head; of two at the same chain seq, the one covering more of the intake."""
        ...

    async def audit_checkpoints(self) -> list[AuditCheckpoint]: ...

    async def latest_audit_checkpoint(self) -> AuditCheckpoint | None:
        """The head with the highest chain seq (then intake seq)."""
        ...

    async def audit_staging(self) -> AuditStaging:
        """How far the intake goes (read its loaded seq first: an event loaded meanwhile is counted staged)."""
        ...

    async def audit_staged_seqs(self, low: int, high: int) -> set[int]:
        """The intake seqs in (low, high] still in the intake or chained."""
        ...


class TenantStore(ResourceStore, TenantReader, RecordStore, Outbox, AuditLog, Protocol):
    """All of a tenant's storage, for callers that need several parts; depend on the smallest part used."""


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


class MigratingEngine(Engine, Protocol):
    """An engine with a schema of its own to bring up to date (``dermbridge storage migrate``): versioned,
    idempotent, safe when several processes run it at once. SQLite needs none (each tenant file is
    brought up to date when it is opened)."""

    async def migrate(self) -> None: ...
