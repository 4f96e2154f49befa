"""Verifying a tenant's audit trail: that nothing was altered, and that nothing is missing.

- Every stored AuditEvent hashes to its link and every link chains to the one before.
- Every signed checkpoint in the database, and every head in the anchor file (``anchor``), has a
  valid signature and matches the chain: a chain shorter than a head is truncated, one that differs
  was rewritten. The anchor lives outside the database, so wiping or truncating the database
  together with its checkpoints is found too.
- A head also covers the staging log: every staging seq it counted, from the first head on, must be
  still staged or loaded into the chain. Staged events removed, or the staging log itself, are found.
- The newest head may be no older than the cadence allows (``stale_after`` before the newest
  event): events rewritten after the last head, where no signature reaches, stay within that window.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from fhir_server.audit.anchor import AnchorFile
from fhir_server.audit.signing import AuditSigner
from fhir_server.storage.port import AuditCheckpoint, AuditLog, TenantStore

GENESIS = "0" * 64
PAGE = 1000
SEQ_PAGE = 100_000  # staging seqs checked at a time


def checkpoint_message(tenant: str, seq: int, chain: str) -> bytes:
    """What a checkpoint of schema 2 signed (the chain only)."""
    return f"dermbridge-audit|{tenant}|{seq}|{chain}".encode()


def head_message(tenant: str, seq: int, chain: str, staged: int, loaded: int, signed_at: str) -> bytes:
    """What a signed head signs: the chain's head, how far the staging log goes, and when."""
    return f"dermbridge-audit-head|{tenant}|{seq}|{chain}|{staged}|{loaded}|{signed_at}".encode()


def signed_message(tenant: str, checkpoint: AuditCheckpoint) -> bytes:
    if checkpoint.signed_at is None or checkpoint.staged_seq is None or checkpoint.loaded_seq is None:
        return checkpoint_message(tenant, checkpoint.seq, checkpoint.chain_hash)
    return head_message(tenant, checkpoint.seq, checkpoint.chain_hash, checkpoint.staged_seq, checkpoint.loaded_seq,
                        checkpoint.signed_at)  # fmt: skip


@dataclass(frozen=True, slots=True)
class VerifyReport:
    ok: bool
    links: int
    checkpoints: int
    broken_at: int | None = None  # the first chain sequence number that does not hold, when there is one
    reason: str = ""
    staged: int = 0  # events staged, not yet loaded into the chain
    head: AuditCheckpoint | None = None  # the newest signed head
    anchor: str = ""  # where the anchored heads were read


class _Broken(Exception):
    def __init__(self, seq: int | None, reason: str) -> None:
        super().__init__(reason)
        self.seq = seq
        self.reason = reason


@dataclass(slots=True)
class _Chain:
    count: int = 0
    newest: str = ""  # lastUpdated of the last event
    hashes: dict[int, str] | None = None


async def verify_trail(
    store: TenantStore, signer: AuditSigner, anchors: AnchorFile | None, stale_after: float
) -> VerifyReport:
    chain = _Chain(hashes={})
    checkpoints: list[AuditCheckpoint] = []
    where = str(anchors.path(store.name)) if anchors is not None else ""
    try:  # the heads before the chain: a server running meanwhile only makes the chain longer
        checkpoints = await store.audit_checkpoints()
        anchored = anchors.heads(store.name) if anchors is not None else None
        await _walk(store, chain)
        for checkpoint in checkpoints:
            _check_signature(store.name, checkpoint, signer, "a checkpoint signature is invalid")
            _check_covers(chain, checkpoint, "a signed checkpoint")
        for head in anchored or []:
            _check_signature(store.name, head, signer, f"a head anchored in {where} has an invalid signature")
        if anchored:
            _check_covers(chain, max(anchored, key=_order), f"the head anchored in {where}")
        heads = [h for h in (*checkpoints, *(anchored or [])) if h.signed_at is not None]
        if not heads:
            raise _Broken(None, "no signed head: nothing proves how long the trail is (wiped, or never served)")
        if anchors is not None and not anchored:
            raise _Broken(None, f"no head anchored in {where}: the anchor is missing")
        await _check_staged(store, heads)
        staging = await store.audit_staging()
        staged, newest_staged = await _staged_tail(store, staging.loaded_seq)
        latest = await store.latest_audit_checkpoint()  # one signed while the chain was read counts too
        if latest is not None and latest.signed_at is not None:
            _check_signature(store.name, latest, signer, "a checkpoint signature is invalid")
            heads.append(latest)
        _check_fresh(heads, max(chain.newest, newest_staged), stale_after)
    except _Broken as broken:
        return VerifyReport(False, chain.count, len(checkpoints), broken.seq, broken.reason, anchor=where)
    return VerifyReport(True, chain.count, len(checkpoints), staged=staged, head=max(heads, key=_order), anchor=where)


def _order(head: AuditCheckpoint) -> tuple[int, int, str]:
    return head.seq, head.staged_seq or 0, head.signed_at or ""


async def _walk(store: TenantStore, chain: _Chain) -> None:
    """Every link's event against its hash, and every link against the one before."""
    assert chain.hashes is not None
    previous, after = GENESIS, 0
    while page := await store.audit_links(after, PAGE):
        for link in page:
            try:
                stored = await store.vread("AuditEvent", link.resource_id, 1)
            except ValueError:  # an encrypted event whose ciphertext no longer opens
                raise _Broken(link.seq, f"AuditEvent/{link.resource_id} was altered") from None
            if stored is None or stored.content is None:
                raise _Broken(link.seq, f"AuditEvent/{link.resource_id} is missing")
            if hashlib.sha256(stored.content).hexdigest() != link.content_hash:
                raise _Broken(link.seq, f"AuditEvent/{link.resource_id} was altered")
            expected = hashlib.sha256(bytes.fromhex(previous) + bytes.fromhex(link.content_hash)).hexdigest()
            if expected != link.chain_hash or link.seq != after + 1:
                raise _Broken(link.seq, "the chain does not link here")
            previous, after = link.chain_hash, link.seq
            chain.hashes[link.seq] = link.chain_hash
            chain.count, chain.newest = chain.count + 1, stored.last_updated


def _check_signature(tenant: str, checkpoint: AuditCheckpoint, signer: AuditSigner, reason: str) -> None:
    message = signed_message(tenant, checkpoint)
    if checkpoint.key_id != signer.key_id or not signer.verify(checkpoint.signature, message):
        raise _Broken(checkpoint.seq, reason)


def _check_covers(chain: _Chain, head: AuditCheckpoint, what: str) -> None:
    """The chain reaches ``head`` and has its hash there."""
    assert chain.hashes is not None
    if head.seq > chain.count:
        raise _Broken(chain.count + 1, f"events {chain.count + 1}..{head.seq} are missing: the chain ends at event "
                                       f"{chain.count}, {what} covers {head.seq}")  # fmt: skip
    if chain.hashes.get(head.seq, GENESIS) != head.chain_hash:
        raise _Broken(head.seq, f"the chain differs from {what} at event {head.seq}")


async def _check_staged(store: AuditLog, heads: list[AuditCheckpoint]) -> None:
    """Every staging seq from the first head's loaded one to the newest head's staged one is still
    staged or in the chain."""
    low = min(h.loaded_seq for h in heads if h.loaded_seq is not None)
    newest = max(heads, key=lambda h: h.staged_seq or 0)
    high = newest.staged_seq or 0
    for start in range(low, high, SEQ_PAGE):
        end = min(start + SEQ_PAGE, high)
        present = await store.audit_staged_seqs(start, end)
        missing = [seq for seq in range(start + 1, end + 1) if seq not in present]
        if missing:
            raise _Broken(None, f"{len(missing)} staged events are missing (staging seqs {_spans(missing)}), "
                                f"covered by the head signed at {newest.signed_at}")  # fmt: skip


def _spans(seqs: list[int]) -> str:
    spans: list[list[int]] = []
    for seq in seqs:
        if spans and spans[-1][1] == seq - 1:
            spans[-1][1] = seq
        else:
            spans.append([seq, seq])
    text = ", ".join(f"{a}" if a == b else f"{a}..{b}" for a, b in spans[:10])
    return text + (", ..." if len(spans) > 10 else "")


async def _staged_tail(store: AuditLog, loaded: int) -> tuple[int, str]:
    """How many events are staged, and the newest one's lastUpdated."""
    count, newest, after = 0, "", loaded
    while page := await store.staged_audit(after, PAGE):
        count, newest, after = count + len(page), max(newest, page[-1].last_updated), page[-1].seq
    return count, newest


def _check_fresh(heads: list[AuditCheckpoint], newest_event: str, stale_after: float) -> None:
    signed = max(h.signed_at or "" for h in heads)
    if newest_event and _seconds(newest_event) - _seconds(signed) > stale_after:
        raise _Broken(None, f"the newest signed head ({signed}) is older than the cadence allows: events until "
                            f"{newest_event} follow it, more than {stale_after:.0f} s later")  # fmt: skip


def _seconds(instant: str) -> float:
    return datetime.fromisoformat(instant).timestamp()


def verify_summary(tenant: str, report: VerifyReport) -> str:
    """What ``dermbridge audit verify`` prints and the admin page shows: what holds, or where the trail breaks
    and what is missing."""
    if not report.ok:
        where = f" at event {report.broken_at}" if report.broken_at is not None else ""
        return f"audit trail of {tenant}: BROKEN{where}: {report.reason}"
    head = report.head
    signed = f"; newest head: event {head.seq}, staging {head.staged_seq}, signed {head.signed_at}" if head else ""
    return (f"audit trail of {tenant}: {report.links} events, {report.staged} staged, {report.checkpoints} signed "
            f"checkpoints{signed}; anchored in {report.anchor}: intact")  # fmt: skip
