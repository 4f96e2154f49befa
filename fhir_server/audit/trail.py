"""Recording and verifying a tenant's audit trail.

Every AuditEvent's stored JSON is hashed into the tenant's chain. The events the server builds
itself (one per interaction) take the short way: ``record`` appends the finished event to the
tenant's staging log, durably; that is all the request waits for. A background loader (the
loader process, ``remote``, or else this process) moves the staged events into the tenant's
store about a second later, stored, chained and indexed in large transactions, and any request
that can read AuditEvents flushes it first, so no read or search sees the trail lag behind.
Events a client POSTs are indexed and chained in the transaction that stores them
(``Repository``); events recorded inside a caller's transaction (``record_in``) are chained with
it and indexed by the next flush.

The server signs the trail's head (the chain's last link and hash, the staging log's last seq
and how much of it is loaded, the time) when a flush has loaded or indexed ``checkpoint_every``
events since the last head, every ``head_interval`` seconds while events come, and at ``close``;
each head is kept in the database and appended to the anchor file (``anchor``). ``verify``
(``fhir_server.audit.verify``) finds an edited, removed, reordered or missing event, a truncated
or wiped chain, lost staged events and a head older than the cadence allows.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from typing import Any

import orjson

from fhir_server.audit.anchor import AnchorFile
from fhir_server.audit.remote import LoaderProcess
from fhir_server.audit.signing import AuditSigner
from fhir_server.audit.verify import GENESIS, VerifyReport, head_message, verify_trail
from fhir_server.repository import new_instant
from fhir_server.search.extract import index_resource
from fhir_server.storage.port import (
    AuditCheckpoint,
    AuditEntry,
    AuditIndexer,
    AuditLog,
    IndexEntries,
    TenantStore,
    TenantTransaction,
)
from fhir_server.validation import validate

log = logging.getLogger(__name__)
PAGE = 1000
LOAD_BATCH = 64  # events loaded per transaction: bounds how long the loop is busy at a time
HEAD_INTERVAL_S = 10.0
HEAD_GRACE_S = 5.0  # a timed head may be late by this much (a busy loop) before ``verify`` calls it stale


def reads_audit_events(path: list[str], params: list[tuple[str, str]]) -> bool:
    """Whether a FHIR request can return AuditEvents (the trail is flushed before it runs)."""
    if not path or path[0] in ("AuditEvent", "_history", "_search"):
        return True  # AuditEvents themselves, or the whole tenant (system search and history, bundles)
    if path[0] == "Patient" and len(path) >= 3:
        return True  # a patient's compartment and $everything hold its AuditEvents
    return any("AuditEvent" in key or "AuditEvent" in value for key, value in params)  # _type, _revinclude


class AuditTrail:
    def __init__(
        self,
        signer: AuditSigner,
        checkpoint_every: int = 256,
        load_delay: float = 1.0,
        load_batch: int = LOAD_BATCH,
        *,
        head_interval: float = HEAD_INTERVAL_S,
        anchors: AnchorFile | None = None,
    ) -> None:
        self.signer = signer
        self.load_batch = load_batch
        self.checkpoint_every = checkpoint_every
        self.load_delay = load_delay
        self.head_interval = head_interval
        self.stale_after = 2 * head_interval + HEAD_GRACE_S
        self.anchors = anchors
        self._since_checkpoint: dict[str, int] = {}
        self._heads: dict[str, tuple[int, str]] = {}  # the last chain link a head has seen, per tenant
        self._timers: dict[str, asyncio.Task[None]] = {}
        self._since_head: dict[str, int] = {}  # events noted since the last timed head, per tenant
        self._recorded: dict[str, int] = {}  # events logged by this process, per tenant
        self._stores: dict[str, AuditLog] = {}
        self._loaders: dict[str, asyncio.Task[None]] = {}
        self._flushing: dict[str, asyncio.Lock] = {}
        self._unreadable: set[tuple[str, str]] = set()
        self.loader: LoaderProcess | None = None  # the audit loader process, when there is one
        self.loads_staged = True  # False: a ``serve --role audit`` process loads them (``sweep``)

    async def record(self, store: AuditLog, event: dict[str, Any]) -> str:
        """Stage one AuditEvent durably (it joins a group commit); returns its id.

        Reads and searches find it once it is loaded: a moment later, or at the next ``flush``."""
        entry = self.entry(event)
        await store.append_audit(entry)
        self._noted(store)
        return entry.resource_id

    async def record_in(self, store: AuditLog, tx: TenantTransaction, event: dict[str, Any]) -> str:
        """``record`` in the caller's transaction of ``store``: the event is chained when it commits.

        The background flush, a second away, finds it committed and indexes it."""
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

    def _noted(self, store: AuditLog) -> None:
        """Have an event of ``store`` loaded, by the loader process or else here, and covered by a
        signed head within ``head_interval``."""
        self._stores[store.name] = store  # loaded at ``close`` at the latest
        if self.loads_staged and (self.loader is None or not self.loader.notify(store.name)):
            self.load_soon(store)
        self._since_head[store.name] = self._since_head.get(store.name, 0) + 1
        timer = self._timers.get(store.name)
        if timer is None or timer.done():
            self._timers[store.name] = asyncio.get_running_loop().create_task(self._timed_heads(store))

    async def _timed_heads(self, store: AuditLog) -> None:
        """A signed head every ``head_interval`` while events come (staged ones too: the head covers
        the staging log), so that no more than that much of the trail is ever unsigned."""
        while self._since_head.get(store.name):
            await asyncio.sleep(self.head_interval)
            self._since_head[store.name] = 0
            try:
                await asyncio.shield(self.checkpoint(store))
            except Exception:  # the next head covers them; ``verify`` reports a head older than the cadence
                log.exception("tenant %s: signing the audit head failed", store.name)

    def load_soon(self, store: AuditLog) -> None:
        """Flush ``store`` about ``load_delay`` from now, and again while events keep coming."""
        self._stores[store.name] = store
        self._recorded[store.name] = self._recorded.get(store.name, 0) + 1
        task = self._loaders.get(store.name)
        if task is None or task.done():
            self._loaders[store.name] = asyncio.get_running_loop().create_task(self._loader(store))

    async def _loader(self, store: AuditLog) -> None:
        while True:
            await asyncio.sleep(self.load_delay)
            mark = self._recorded[store.name]
            try:
                await asyncio.shield(self.flush(store))  # a cancelled loader never stops mid-transaction
            except Exception:  # staged and durable: the next run or flush loads them
                log.exception("tenant %s: loading staged AuditEvents failed", store.name)
            if self._recorded[store.name] == mark:
                return

    async def flush(self, store: AuditLog) -> int:
        """Load every staged AuditEvent of the tenant into its store, and index every stored one
        that is not yet; returns how many were."""
        lock = self._flushing.setdefault(store.name, asyncio.Lock())
        async with lock:
            done = await store.settle_audit(self._indexer(store.name), self.load_batch)
            self._since_checkpoint[store.name] = self._since_checkpoint.get(store.name, 0) + done
            if self._since_checkpoint[store.name] >= self.checkpoint_every:
                self._since_checkpoint[store.name] = 0  # counted from here: a failed signing waits for as many again
                try:
                    await self.checkpoint(store)
                except Exception:  # the events are chained; the next checkpoint covers them
                    log.exception("tenant %s: signing an audit checkpoint failed", store.name)
            return done

    def _indexer(self, tenant: str) -> AuditIndexer:
        async def index(entry: AuditEntry) -> IndexEntries | None:
            resource = self._readable(tenant, entry)
            return None if resource is None else index_resource(resource)

        return index

    def _readable(self, tenant: str, entry: AuditEntry) -> dict[str, Any] | None:
        try:
            if entry.content is not None:
                resource: dict[str, Any] = orjson.loads(entry.content)
                return resource
        except orjson.JSONDecodeError:
            pass
        if (tenant, entry.resource_id) not in self._unreadable:  # once: it stays unindexed for ``verify``
            self._unreadable.add((tenant, entry.resource_id))
            log.error("tenant %s: AuditEvent/%s cannot be read; run `dermbridge audit verify`", tenant,
                      entry.resource_id)  # fmt: skip
        return None

    async def close(self) -> None:
        """Load and index everything this process recorded, and sign the head (at shutdown)."""
        tasks = [*self._loaders.values(), *self._timers.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loaders.clear()
        self._timers.clear()
        for store in self._stores.values():
            await self.flush(store)
            await self.checkpoint(store)

    async def checkpoint(self, store: AuditLog, signed_at: str | None = None) -> AuditCheckpoint:
        """Sign the trail's head: the chain's last link (reading only the links since the last head)
        and how far the staging log goes; kept in the database and in the anchor file."""
        staging = await store.audit_staging()  # before the chain: an event loaded meanwhile is in both
        seq, chain = self._heads.get(store.name) or await self._last_head(store)
        while page := await store.audit_links(seq, PAGE):
            seq, chain = page[-1].seq, page[-1].chain_hash
        self._heads[store.name] = (seq, chain)
        signed_at = signed_at or new_instant()
        message = head_message(store.name, seq, chain, staging.staged_seq, staging.loaded_seq, signed_at)
        head = AuditCheckpoint(seq, chain, self.signer.sign(message), self.signer.algorithm, self.signer.key_id,
                               staging.staged_seq, staging.loaded_seq, signed_at)  # fmt: skip
        await store.add_audit_checkpoint(head)
        if self.anchors is not None:
            await asyncio.to_thread(self.anchors.append, store.name, head)
        return head

    @staticmethod
    async def _last_head(store: AuditLog) -> tuple[int, str]:
        latest = await store.latest_audit_checkpoint()
        return (latest.seq, latest.chain_hash) if latest is not None else (0, GENESIS)

    async def verify(self, store: TenantStore) -> VerifyReport:
        """Check the chain, every signed checkpoint, the anchored heads, the staged events a head
        covers and the age of the newest head (``fhir_server.audit.verify``)."""
        return await verify_trail(store, self.signer, self.anchors, self.stale_after)
