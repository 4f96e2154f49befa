"""Recording and verifying a tenant's audit trail.

Every AuditEvent's stored JSON is hashed into the tenant's chain. The events the server builds
itself (one per interaction) take the short way: ``record`` stores the finished event and its
link in the chain, durably, without search index rows; that is all the request waits for. A
background indexer adds the index rows in batches about a second later, and any request that can
search AuditEvents flushes it first, so no search sees the trail lag behind. Events a client
POSTs are indexed and chained in the transaction that stores them (``Repository``).

Every ``checkpoint_every`` events the trail signs (tenant, seq, chain hash) with the server key.
``verify`` recomputes the chain from the stored AuditEvents and checks every checkpoint: an
edited, removed or reordered event is found.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from fhir_server.audit.remote import RemoteWriter, WriterGone
from fhir_server.audit.signing import AuditSigner
from fhir_server.repository import new_instant
from fhir_server.search.extract import index_resource
from fhir_server.storage.port import AuditCheckpoint, AuditEntry, IndexEntries, TenantStore, TenantTransaction
from fhir_server.validation import validate

log = logging.getLogger(__name__)
GENESIS = "0" * 64
PAGE = 1000
INDEX_BATCH = 64  # events indexed per transaction: bounds how long the loop is busy at a time


def checkpoint_message(tenant: str, seq: int, chain: str) -> bytes:
    return f"dermbridge-audit|{tenant}|{seq}|{chain}".encode()


@dataclass(frozen=True, slots=True)
class VerifyReport:
    ok: bool
    links: int
    checkpoints: int
    broken_at: int | None = None  # the first chain sequence number that does not hold
    reason: str = ""


def reads_audit_events(path: list[str], params: list[tuple[str, str]]) -> bool:
    """Whether a FHIR request can return AuditEvents (the trail is flushed before it runs)."""
    if not path or path[0] in ("AuditEvent", "_history", "_search"):
        return True  # AuditEvents themselves, or the whole tenant (system search and history, bundles)
    if path[0] == "Patient" and len(path) >= 3:
        return True  # a patient's compartment and $everything hold its AuditEvents
    return any("AuditEvent" in key or "AuditEvent" in value for key, value in params)  # _type, _revinclude


class AuditTrail:
    def __init__(
        self, signer: AuditSigner, checkpoint_every: int = 256, index_delay: float = 1.0, index_batch: int = INDEX_BATCH
    ) -> None:
        self.signer = signer
        self.index_batch = index_batch
        self.checkpoint_every = checkpoint_every
        self.index_delay = index_delay
        self._since_checkpoint: dict[str, int] = {}
        self._head_seq: dict[str, int] = {}  # the last chain link a checkpoint has seen, per tenant
        self._recorded: dict[str, int] = {}  # events logged by this process, per tenant
        self._stores: dict[str, TenantStore] = {}
        self._indexers: dict[str, asyncio.Task[None]] = {}
        self._flushing: dict[str, asyncio.Lock] = {}
        self._unreadable: set[tuple[str, int]] = set()
        self.writer: RemoteWriter | None = None  # the audit writer process, when there is one

    async def record(self, store: TenantStore, event: dict[str, Any]) -> str:
        """Store and chain one AuditEvent durably; returns its id. With an audit writer process
        (``remote``) it is stored there, otherwise here (in a group commit).

        Searches find it once an indexer has run, or after the next flush."""
        entry = self.entry(event)
        if self.writer is not None and self.writer.alive:
            try:
                await self.writer.append(store.name, entry)
                return entry.resource_id
            except WriterGone:  # stored there or not: it is looked for before it is stored here
                if await store.read("AuditEvent", entry.resource_id) is not None:
                    return entry.resource_id
        await self.append(store, entry)
        return entry.resource_id

    async def append(self, store: TenantStore, entry: AuditEntry) -> None:
        """Store and chain a finished event in this process (it joins a group commit)."""
        await store.append_audit(entry)
        if self._noted(store):
            try:
                await self.checkpoint(store)
            except Exception:  # the event is written; the next checkpoint covers it
                log.exception("tenant %s: signing an audit checkpoint failed", store.name)

    async def record_in(self, store: TenantStore, tx: TenantTransaction, event: dict[str, Any]) -> str:
        """``record`` in the caller's transaction of ``store``: the event commits with it.

        A checkpoint falling due here waits for the next ``record`` (signing one takes the write
        lock the transaction may hold). The indexer, a second away, finds the event committed."""
        entry = self.entry(event)
        await tx.append_audit(entry)
        self._noted(store)
        return entry.resource_id

    @staticmethod
    def entry(event: dict[str, Any]) -> AuditEntry:
        """A server-built AuditEvent, finished (id, meta) and hashed for the chain."""
        validate(event, "AuditEvent", server_built=True)
        id, now = str(uuid.uuid4()), new_instant()
        body = {"resourceType": "AuditEvent", "id": id, "meta": {"versionId": "1", "lastUpdated": now}}
        body.update((k, v) for k, v in event.items() if k not in ("resourceType", "id", "meta"))
        content = orjson.dumps(body)
        return AuditEntry(0, id, now, content, hashlib.sha256(content).hexdigest())

    def _noted(self, store: TenantStore) -> bool:
        """Count an event of ``store`` and schedule its indexing; whether a checkpoint is due."""
        self._stores[store.name] = store
        self._recorded[store.name] = self._recorded.get(store.name, 0) + 1
        self._index_soon(store)
        since = self._since_checkpoint.get(store.name, 0) + 1
        due = since >= self.checkpoint_every
        self._since_checkpoint[store.name] = 0 if due else since
        return due

    def _index_soon(self, store: TenantStore) -> None:
        task = self._indexers.get(store.name)
        if task is None or task.done():
            self._indexers[store.name] = asyncio.get_running_loop().create_task(self._indexer(store))

    async def _indexer(self, store: TenantStore) -> None:
        while True:
            await asyncio.sleep(self.index_delay)
            mark = self._recorded[store.name]
            try:
                await asyncio.shield(self.flush(store))  # a cancelled indexer never stops mid-transaction
            except Exception:  # stored and durable: the next run or flush indexes them
                log.exception("tenant %s: indexing logged AuditEvents failed", store.name)
            if self._recorded[store.name] == mark:
                return

    async def flush(self, store: TenantStore) -> int:
        """Index every stored AuditEvent of the tenant that is not yet; returns how many were."""
        lock = self._flushing.setdefault(store.name, asyncio.Lock())
        indexed, after = 0, 0
        async with lock:
            while entries := await store.pending_audit(after, self.index_batch):
                items: list[tuple[int, IndexEntries]] = []
                for entry in entries:
                    after = entry.seq
                    resource = self._readable(store.name, entry)
                    if resource is not None:
                        items.append((entry.seq, index_resource(resource)))
                indexed += await store.index_audit(items)
        return indexed

    def _readable(self, tenant: str, entry: AuditEntry) -> dict[str, Any] | None:
        try:
            if entry.content is not None:
                resource: dict[str, Any] = orjson.loads(entry.content)
                return resource
        except orjson.JSONDecodeError:
            pass
        if (tenant, entry.seq) not in self._unreadable:  # once: it stays unindexed for ``verify`` to report
            self._unreadable.add((tenant, entry.seq))
            log.error("tenant %s: AuditEvent %d of the chain cannot be read; run `dermbridge audit verify`", tenant,
                      entry.seq)  # fmt: skip
        return None

    async def close(self) -> None:
        """Index everything this process recorded (at shutdown)."""
        tasks = list(self._indexers.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._indexers.clear()
        for store in self._stores.values():
            await self.flush(store)

    async def checkpoint(self, store: TenantStore) -> AuditCheckpoint | None:
        """Sign the chain's current head (reading only the links since the last checkpoint)."""
        head = None
        after = self._head_seq.get(store.name, 0)
        while page := await store.audit_links(after, PAGE):
            head = page[-1]
            after = head.seq
        self._head_seq[store.name] = after
        if head is None:
            return None
        message = checkpoint_message(store.name, head.seq, head.chain_hash)
        checkpoint = AuditCheckpoint(head.seq, head.chain_hash, self.signer.sign(message), self.signer.algorithm,
                                     self.signer.key_id)  # fmt: skip
        await store.add_audit_checkpoint(checkpoint)
        return checkpoint

    async def verify(self, store: TenantStore) -> VerifyReport:
        previous, after, count = GENESIS, 0, 0
        chain_at: dict[int, str] = {}
        while page := await store.audit_links(after, PAGE):
            for link in page:
                try:
                    stored = await store.vread("AuditEvent", link.resource_id, 1)
                except ValueError:  # an encrypted event whose ciphertext no longer opens
                    return VerifyReport(False, count, 0, link.seq, f"AuditEvent/{link.resource_id} was altered")
                if stored is None or stored.content is None:
                    return VerifyReport(False, count, 0, link.seq, f"AuditEvent/{link.resource_id} is missing")
                if hashlib.sha256(stored.content).hexdigest() != link.content_hash:
                    return VerifyReport(False, count, 0, link.seq, f"AuditEvent/{link.resource_id} was altered")
                expected = hashlib.sha256(bytes.fromhex(previous) + bytes.fromhex(link.content_hash)).hexdigest()
                if expected != link.chain_hash or link.seq != after + 1:
                    return VerifyReport(False, count, 0, link.seq, "the chain does not link here")
                previous, after, count = link.chain_hash, link.seq, count + 1
                chain_at[link.seq] = link.chain_hash
        checkpoints = await store.audit_checkpoints()
        for checkpoint in checkpoints:
            message = checkpoint_message(store.name, checkpoint.seq, checkpoint.chain_hash)
            if checkpoint.key_id != self.signer.key_id or not self.signer.verify(checkpoint.signature, message):
                return VerifyReport(False, count, len(checkpoints), checkpoint.seq, "a checkpoint signature is invalid")
            if chain_at.get(checkpoint.seq) != checkpoint.chain_hash:
                return VerifyReport(False, count, len(checkpoints), checkpoint.seq,
                                    "the chain differs from a signed checkpoint")  # fmt: skip
        return VerifyReport(True, count, len(checkpoints))
