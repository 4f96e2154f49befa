"""Moving tenants from one engine to another (``dermbridge storage copy``), through the engine port.

What is copied is what the engine stores, as stored: every version of every resource (tombstones
included, ciphertext stays ciphertext: the keys travel with it, as records), every record, and the
audit trail link for link with its signed heads. Only the search index is built anew, from the
plaintext (``index_resource``), as the server builds it on write. The source's trail is flushed and
verified before anything is copied; the target's trail is verified on arrival (``verify_trail``), and the
counts of both sides are compared. A target tenant holding anything but its tenant key is refused. Outbox
deliveries are not copied: stop the server (and let its workers finish) before copying.

The DICOM objects are copied when the target keeps them elsewhere (``copy_blobs``: from files into
PostgreSQL, say), as stored: sealed objects stay sealed, their keys travel in the instance records.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import orjson

from dicom_node.blobs import BlobStore
from fhir_server.audit.trail import AuditTrail
from fhir_server.crypto.keyring import TENANT_KEYS
from fhir_server.search.extract import index_resource
from fhir_server.storage.port import (
    AuditEntry,
    AuditIndexer,
    AuditLink,
    AuditLog,
    Engine,
    HistoryQuery,
    IndexEntries,
    Record,
    RecordReader,
    ResourceKey,
    ResourceReader,
    ResourceStore,
    ResourceVersion,
    TenantStore,
)
from fhir_server.storage.query import RecordQuery

PAGE = 1000
RESOURCES_PER_TRANSACTION = 200
AUDIT = "AuditEvent"  # copied with the chain, in chain order


class CopyRefused(Exception):
    """The copy cannot start (a non-empty target, a source trail that does not verify) or did not arrive
    whole (counts differ, the target's trail does not verify)."""


@dataclass(frozen=True, slots=True)
class Counts:
    versions: int
    records: dict[str, int]
    links: int
    chain_head: str
    checkpoints: int  # signed heads covering at least one event


@dataclass(frozen=True, slots=True)
class Sides:
    """One engine as stored (``plain``) and as the server reads it (``readable``: decrypted when on)."""

    plain: Engine
    readable: Engine


async def copy_tenant(
    name: str, source: Sides, target: Sides, trail: AuditTrail, local_base: Callable[[str], str]
) -> Counts:
    """Copy tenant ``name``; the counts of what arrived (equal to the source's, or ``CopyRefused``)."""
    src_plain, src = await source.plain.tenant(name), await source.readable.tenant(name)
    await trail.flush(src)  # staged AuditEvents join the chain first: the copy takes the chain
    report = await trail.verify(src)
    if not report.ok:
        raise CopyRefused(f"tenant {name}: the source's audit trail does not verify ({report.reason})")
    await target.plain.create_tenant(name)
    dst_plain = await target.plain.tenant(name)
    await _check_empty(name, dst_plain)
    await _copy_records(src_plain, dst_plain)
    await _copy_resources(src_plain, src, dst_plain, local_base(name))
    await _copy_trail(src_plain, dst_plain)
    dst = await target.readable.tenant(name)
    await dst.settle_audit(_audit_indexer(local_base(name)), trail.load_batch)
    arrived = await trail.verify(dst)
    if not arrived.ok:
        raise CopyRefused(f"tenant {name}: the audit trail does not verify on arrival ({arrived.reason})")
    expected, counted = await counts(src_plain), await counts(dst_plain)
    if expected != counted:
        raise CopyRefused(f"tenant {name}: the counts differ: source {expected}, target {counted}")
    return counted


async def copy_blobs(name: str, source: BlobStore, target: BlobStore) -> int:
    """Copy tenant ``name``'s DICOM objects, each staged and published as ingest does; how many (the same on
    both sides, or ``CopyRefused``)."""
    copied = 0
    async for key in source.keys(name):
        staged = await target.stage(name, await source.read(key))
        try:
            await target.publish(staged, key)
        except BaseException:
            await target.discard(staged)
            raise
        copied += 1
    arrived = sum([1 async for _ in target.keys(name)])
    if arrived != copied:
        raise CopyRefused(f"tenant {name}: {copied} DICOM objects copied, {arrived} in the target")
    return copied


async def _check_empty(name: str, store: TenantStore) -> None:
    """Nothing but the tenant key ``dermbridge tenant create`` makes (it is replaced by the source's)."""
    found = await counts(store)
    staged = await store.staged_audit(0, 1)
    others = {c: n for c, n in found.records.items() if c != TENANT_KEYS}
    if found.versions or found.links or staged or others:
        raise CopyRefused(
            f"the target tenant {name} is not empty ({found.versions} resource versions, {found.links} audit "
            f"links, records {others or 'none'}): copy into a new tenant. If an earlier copy stopped part-way, "
            f'drop what it left and copy again: on PostgreSQL `DROP SCHEMA "{name}" CASCADE; DELETE FROM '
            f"_dermbridge.tenant WHERE name = '{name}';`, on SQLite remove tenants/{name}.sqlite* under the target's "
            "directory"
        )
    async with store.transaction() as tx:
        async for record in _records(store, TENANT_KEYS):
            await tx.delete_record(record.collection, record.key)


async def counts(store: TenantStore) -> Counts:
    """What a tenant holds, as the copy compares it."""
    versions = (await store.history(HistoryQuery(count=0))).total
    records = {c: sum([1 async for _ in _records(store, c)]) for c in await store.record_collections()}
    links, head = 0, ""
    async for link in _links(store):
        links, head = links + 1, link.chain_hash
    heads = [c for c in await store.audit_checkpoints() if c.seq > 0]  # one at 0 (``tenant create``) covers nothing
    return Counts(versions, records, links, head, len(heads))


async def _records(store: RecordReader, collection: str) -> AsyncIterator[Record]:
    """Paged by key (``after_key``): each page is an index range scan, not an OFFSET past all before it."""
    after: str | None = None
    while page := await store.find_records(RecordQuery(collection, limit=PAGE, after_key=after)):
        for record in page:
            yield record
        after = page[-1].key


async def _links(store: AuditLog) -> AsyncIterator[AuditLink]:
    after = 0
    while page := await store.audit_links(after, PAGE):
        for link in page:
            yield link
        after = page[-1].seq


async def _copy_records(source: TenantStore, target: TenantStore) -> None:
    for collection in await source.record_collections():
        batch: list[Record] = []
        async for record in _records(source, collection):
            batch.append(record)
            if len(batch) >= PAGE:
                await _put(target, batch)
                batch = []
        await _put(target, batch)


async def _put(target: ResourceStore, records: list[Record]) -> None:
    if records:
        async with target.transaction() as tx:
            for record in records:
                await tx.put_record(record)


async def _copy_resources(source: ResourceStore, readable: ResourceReader, target: ResourceStore, base: str) -> None:
    """Each resource's versions in order, the current one with its index rows (from its plaintext)."""
    keys = sorted(await _resource_keys(source), key=lambda k: (k.resource_type, k.id))
    for start in range(0, len(keys), RESOURCES_PER_TRANSACTION):
        chunk = keys[start : start + RESOURCES_PER_TRANSACTION]
        versions = [
            (key, await _versions(source, key), await readable.read(key.resource_type, key.id)) for key in chunk
        ]
        async with target.transaction() as tx:
            for _, history, current in versions:
                for version in history[:-1]:
                    await tx.write(version, None)
                await tx.write(history[-1], _index(current, base))


async def _resource_keys(store: ResourceStore) -> set[ResourceKey]:
    keys: set[ResourceKey] = set()
    offset = 0
    while (page := await store.history(HistoryQuery(count=PAGE, offset=offset))).versions:
        keys.update(v.key for v in page.versions if v.resource_type != AUDIT)
        offset += len(page.versions)
    return keys


async def _versions(store: ResourceStore, key: ResourceKey) -> list[ResourceVersion]:
    """Oldest first."""
    found: list[ResourceVersion] = []
    while page := (
        await store.history(HistoryQuery(key.resource_type, key.id, count=PAGE, offset=len(found)))
    ).versions:
        found.extend(page)
    return sorted(found, key=lambda v: v.version)


def _index(current: ResourceVersion | None, base: str) -> IndexEntries | None:
    if current is None or current.content is None:
        return None  # a tombstone, or a version nobody can open any more (its patient was erased)
    return index_resource(orjson.loads(current.content), base)


async def _copy_trail(source: TenantStore, target: TenantStore) -> None:
    """The chain link for link (each event as stored, its hash of the plaintext, its intake seq), then
    the signed heads: the target's chain hashes to the same values at the same places."""
    batch: list[AuditEntry] = []
    async for link in _links(source):
        stored = await source.vread(AUDIT, link.resource_id, 1)
        if stored is None:
            raise CopyRefused(f"AuditEvent/{link.resource_id} of the chain is missing in the source")
        batch.append(AuditEntry(link.staged_seq or 0, link.resource_id, stored.last_updated, stored.content,
                                link.content_hash))  # fmt: skip
        if len(batch) >= PAGE:
            await _append(target, batch)
            batch = []
    await _append(target, batch)
    for checkpoint in await source.audit_checkpoints():
        await target.add_audit_checkpoint(checkpoint)


async def _append(target: ResourceStore, entries: list[AuditEntry]) -> None:
    if entries:
        async with target.transaction() as tx:
            for entry in entries:
                await tx.append_audit(entry)


def _audit_indexer(base: str) -> AuditIndexer:
    async def index(entry: AuditEntry) -> IndexEntries | None:
        try:
            return None if entry.content is None else index_resource(orjson.loads(entry.content), base)
        except orjson.JSONDecodeError:  # unreadable: chained, unindexed, and ``verify`` says so
            return None

    return index
