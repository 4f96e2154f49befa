"""An Engine that encrypts what any engine stores: every resource version is sealed under the data
key of the patient whose compartment it belongs to (the tenant's data key otherwise) on its way
in, and opened on its way out. Everything above the engine port sees plaintext; everything below
(database files, WAL, backups) sees ciphertext, except the search index, which erasure deletes.

AuditEvents are always sealed under the tenant key: they name patients only by reference, and
must stay verifiable after a patient's erasure. A Binary and a Provenance outside every compartment
are sealed under the data key of the patient that their ``securityContext`` (binary.html#security)
or first ``target`` belongs to: a saliency map, or the record of how a finding was made, is the
patient's data and is shredded with it.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable, Sequence
from collections.abc import Set as AbstractSet
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import replace
from typing import Any

import orjson

from fhir_server.crypto.envelope import aad, key_ref, open_content, seal_content
from fhir_server.crypto.keyring import TENANT_REF, ErasedSubject, TenantKeyring
from fhir_server.crypto.master import MasterKeys, UnwrapError, open_sealed, seal
from fhir_server.errors import gone
from fhir_server.search.extract import parse_local_reference
from fhir_server.search.membership import compartment_patients, owners
from fhir_server.storage.port import (
    AuditCheckpoint,
    AuditEntry,
    AuditIndexer,
    AuditLink,
    AuditStaging,
    Encryption,
    Engine,
    HistoryPage,
    HistoryQuery,
    IndexEntries,
    OutboxEvent,
    Record,
    ResourceKey,
    ResourceVersion,
    SearchPage,
    TenantReader,
    TenantStore,
    TenantTransaction,
    TransactionEncryption,
)
from fhir_server.storage.query import RecordQuery, SearchQuery

TENANT_KEYED = frozenset({"AuditEvent"})


def subject_ref(resource_type: str, resource: dict[str, Any]) -> str:
    """The data key a resource is sealed under: its (first) owner's, the patient whose record it is and
    whose ``$erase`` tombstones it; a resource that merely names a patient (a performer) is not theirs."""
    if resource_type in TENANT_KEYED:
        return TENANT_REF
    owning = owners({**resource, "resourceType": resource_type})
    patients = [p for p in compartment_patients({**resource, "resourceType": resource_type}) if p in owning]
    return f"Patient/{patients[0]}" if patients else TENANT_REF


def _proxy(resource_type: str, resource: dict[str, Any]) -> tuple[str, str] | None:
    """The resource whose subject a Binary (securityContext) or a Provenance (first target) shares."""
    if resource_type == "Binary":
        pointer = resource.get("securityContext")
    elif resource_type == "Provenance":
        pointer = next(iter(resource.get("target") or []), None)
    else:
        return None
    reference = pointer.get("reference") if isinstance(pointer, dict) else None
    target = parse_local_reference(reference) if isinstance(reference, str) else None
    return target if target is not None and target[0] not in ("Binary", "Provenance") else None


async def sealing_ref(reader: TenantReader, resource_type: str, resource: dict[str, Any]) -> str:
    """``subject_ref``; for a Binary or a Provenance in no compartment, the subject of its proxy."""
    ref = subject_ref(resource_type, resource)
    target = _proxy(resource_type, resource) if ref == TENANT_REF else None
    found = await reader.read(*target) if target is not None else None
    if target is None or found is None or found.content is None:
        return ref
    return subject_ref(target[0], orjson.loads(found.content))


async def _open(keyring: TenantKeyring, reader: TenantReader, version: ResourceVersion) -> ResourceVersion:
    content = version.content
    if content is None:
        return version
    ref = key_ref(content)
    if ref is None:  # stored in plaintext, before encryption was turned on
        return version
    key = await keyring.for_read(reader, ref)
    if key is None:  # erased: nothing of it can be opened any more
        return replace(version, content=None)
    opened = open_content(key, content, aad(keyring.tenant, version.resource_type, version.id, version.version))
    return replace(version, content=opened)


def _sealed_audit(keyring: TenantKeyring, key: bytes, entry: AuditEntry) -> AuditEntry:
    if entry.content is None:
        return entry
    associated = aad(keyring.tenant, "AuditEvent", entry.resource_id, 1)
    return replace(entry, content=seal_content(key, TENANT_REF, associated, entry.content))


class _Reading:
    """The read side, shared by the store and its transactions."""

    _inner: TenantReader
    keyring: TenantKeyring

    async def read(self, resource_type: str, id: str) -> ResourceVersion | None:
        version = await self._inner.read(resource_type, id)
        return None if version is None else await _open(self.keyring, self._inner, version)

    async def read_many(self, keys: Sequence[ResourceKey]) -> list[ResourceVersion]:
        return [await _open(self.keyring, self._inner, v) for v in await self._inner.read_many(keys)]

    async def search(self, query: SearchQuery) -> SearchPage:
        return await self._inner.search(query)

    async def search_versions(self, query: SearchQuery) -> list[ResourceVersion]:
        return [await _open(self.keyring, self._inner, v) for v in await self._inner.search_versions(query)]

    async def get_record(self, collection: str, key: str) -> Record | None:
        return await self._inner.get_record(collection, key)

    async def find_records(self, query: RecordQuery) -> list[Record]:
        return await self._inner.find_records(query)

    @property
    def encryption(self) -> Encryption:
        """The declared capability (``fhir_server.storage.port.Encryption``): this store itself."""
        return self

    @property
    def erased(self) -> AbstractSet[str]:
        return self.keyring.erased

    async def erase(self, tx: TenantTransaction, ref: str) -> None:
        await self.keyring.erase(tx, ref)

    async def open_secret(self, sealed: dict[str, str], context: bytes) -> bytes | None:
        """A secret sealed by ``EncryptingTransaction.seal_secret``; None once its subject is erased."""
        key = await self.keyring.for_read(self._inner, sealed["ref"])
        if key is None:
            return None
        return open_sealed(key, base64.b64decode(sealed["wrapped"]), context)


class EncryptingTransaction(_Reading):
    def __init__(self, inner: TenantTransaction, keyring: TenantKeyring) -> None:
        self._inner = inner
        self._tx = inner
        self.keyring = keyring
        self.stored: set[str] = set()  # data keys this transaction puts
        self.first_written: ResourceVersion | None = None  # in plaintext

    @property
    def encryption(self) -> TransactionEncryption:
        return self

    async def data_key(self, ref: str) -> bytes:
        """``ref``'s data key, made durable with this transaction when it is new."""
        try:
            data_key = await self.keyring.for_write(self._tx, ref)
        except ErasedSubject as exc:
            raise gone(f"{ref} was erased: no new data is kept for it") from exc
        if not data_key.durable and ref not in self.stored:
            await self._tx.put_record(data_key.record)
            self.stored.add(ref)
        return data_key.key

    async def seal_secret(self, ref: str, secret: bytes, context: bytes) -> dict[str, str]:
        """``secret`` (e.g. a DICOM object's own key) sealed under ``ref``'s data key."""
        sealed = seal(await self.data_key(ref), secret, context)
        return {"ref": ref, "wrapped": base64.b64encode(sealed).decode()}

    async def write(self, version: ResourceVersion, index: IndexEntries | None) -> None:
        self.first_written = self.first_written or version
        if version.content is not None:
            ref = await sealing_ref(self, version.resource_type, orjson.loads(version.content))
            key = await self.data_key(ref)
            associated = aad(self.keyring.tenant, version.resource_type, version.id, version.version)
            version = replace(version, content=seal_content(key, ref, associated, version.content))
        await self._tx.write(version, index)

    async def append_event(self, topic: str, payload: dict[str, Any]) -> None:
        await self._tx.append_event(topic, payload)

    async def put_record(self, record: Record) -> None:
        await self._tx.put_record(record)

    async def chain_audit(self, resource_id: str, content: bytes) -> None:
        await self._tx.chain_audit(resource_id, content)  # the plaintext's hash: verify reads plaintext back

    async def append_audit(self, entry: AuditEntry) -> None:
        await self._tx.append_audit(_sealed_audit(self.keyring, await self.data_key(TENANT_REF), entry))

    async def delete_record(self, collection: str, key: str) -> None:
        await self._tx.delete_record(collection, key)


class EncryptingTenantStore(_Reading):
    def __init__(self, inner: TenantStore, keyring: TenantKeyring) -> None:
        self._inner = inner
        self._store = inner
        self.keyring = keyring
        self.name = inner.name

    async def rotate_tenant_key(self) -> int:
        return await self.keyring.rotate_tenant_key(self._store)

    async def rewrap_tenant_keys(self) -> int:
        return await self.keyring.rewrap_tenant_keys(self._store)

    async def record_collections(self) -> list[str]:
        return await self._store.record_collections()

    async def vread(self, resource_type: str, id: str, version: int) -> ResourceVersion | None:
        found = await self._store.vread(resource_type, id, version)
        return None if found is None else await _open(self.keyring, self._store, found)

    async def history(self, query: HistoryQuery) -> HistoryPage:
        page = await self._store.history(query)
        return replace(page, versions=[await _open(self.keyring, self._store, v) for v in page.versions])

    def transaction(self) -> AbstractAsyncContextManager[EncryptingTransaction]:
        return self._transaction()

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[EncryptingTransaction]:
        async with self._store.transaction() as tx:
            wrapped = EncryptingTransaction(tx, self.keyring)
            yield wrapped
        for ref in wrapped.stored:  # committed: later transactions need not put these keys again
            known = self.keyring.data.get(ref)
            if known is not None:
                known.durable = True

    async def claim_events(self, consumer: str, limit: int, lease_seconds: float) -> list[OutboxEvent]:
        return await self._store.claim_events(consumer, limit, lease_seconds)

    async def ack_event(self, consumer: str, seq: int) -> None:
        await self._store.ack_event(consumer, seq)

    async def ack_events(self, consumer: str, seqs: Sequence[int]) -> None:
        await self._store.ack_events(consumer, seqs)

    async def defer_event(self, consumer: str, seq: int, seconds: float) -> None:
        await self._store.defer_event(consumer, seq, seconds)

    async def audit_links(self, after_seq: int, limit: int) -> list[AuditLink]:
        return await self._store.audit_links(after_seq, limit)

    async def append_audit(self, entry: AuditEntry) -> None:
        """Sealed under the tenant key, like every AuditEvent."""
        await self._store.append_audit(_sealed_audit(self.keyring, await self._tenant_data_key(), entry))

    async def settle_audit(self, indexer: AuditIndexer, batch: int) -> int:
        """The events are indexed from their plaintext; the sealed content is what is stored."""

        async def opened(entry: AuditEntry) -> IndexEntries | None:
            return await indexer(await self._open_entry(entry))

        return await self._store.settle_audit(opened, batch)

    async def staged_audit(self, after_seq: int, limit: int) -> list[AuditEntry]:
        entries = await self._store.staged_audit(after_seq, limit)
        return [await self._open_entry(entry) for entry in entries]

    async def _tenant_data_key(self) -> bytes:
        known = self.keyring.data.get(TENANT_REF)
        if known is None or not known.durable:  # the tenant's first sealed write: keep the key with it
            async with self.transaction() as tx:
                return await tx.data_key(TENANT_REF)
        return known.key

    async def _open_entry(self, entry: AuditEntry) -> AuditEntry:
        version = ResourceVersion("AuditEvent", entry.resource_id, 1, entry.last_updated, entry.content, "POST")
        try:
            opened = await _open(self.keyring, self._store, version)
        except UnwrapError:  # altered in the database: left for ``audit verify`` to report
            return replace(entry, content=None)
        return replace(entry, content=opened.content)

    async def add_audit_checkpoint(self, checkpoint: AuditCheckpoint) -> None:
        await self._store.add_audit_checkpoint(checkpoint)

    async def audit_checkpoints(self) -> list[AuditCheckpoint]:
        return await self._store.audit_checkpoints()

    async def latest_audit_checkpoint(self) -> AuditCheckpoint | None:
        return await self._store.latest_audit_checkpoint()

    async def audit_staging(self) -> AuditStaging:
        return await self._store.audit_staging()

    async def audit_staged_seqs(self, low: int, high: int) -> set[int]:
        return await self._store.audit_staged_seqs(low, high)

    async def scrub(self) -> None:
        await self._store.scrub()


class EncryptingEngine:
    def __init__(self, inner: Engine, masters: MasterKeys) -> None:
        self.inner = inner
        self.masters = masters
        self._stores: dict[str, EncryptingTenantStore] = {}
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        self._stores.clear()
        await self.inner.close()

    async def create_tenant(self, name: str) -> None:
        await self.inner.create_tenant(name)
        await self.tenant(name)  # its tenant key, now

    async def tenant_names(self) -> list[str]:
        return await self.inner.tenant_names()

    async def tenant(self, name: str) -> EncryptingTenantStore:
        store = self._stores.get(name)
        if store is not None:
            return store
        inner = await self.inner.tenant(name)
        async with self._lock:
            if name not in self._stores:
                keyring = TenantKeyring(name, self.masters)
                await keyring.load(inner)
                self._stores[name] = EncryptingTenantStore(inner, keyring)
        return self._stores[name]

    def add_commit_listener(self, listener: Callable[[str], None]) -> None:
        self.inner.add_commit_listener(listener)
