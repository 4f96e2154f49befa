"""Recording and verifying a tenant's audit trail.

Every AuditEvent's stored JSON is hashed into the tenant's chain in the transaction that writes it
(``Repository`` does this for the AuditEvent type). Every ``checkpoint_every`` events the trail
signs (tenant, seq, chain hash) with the server key. ``verify`` recomputes the chain from the
stored AuditEvents and checks every checkpoint: an edited, removed or reordered event is found.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

from fhir_server.audit.signing import AuditSigner
from fhir_server.repository import Repository
from fhir_server.storage.port import AuditCheckpoint, TenantStore

log = logging.getLogger(__name__)
GENESIS = "0" * 64
PAGE = 1000


def checkpoint_message(tenant: str, seq: int, chain: str) -> bytes:
    return f"dermbridge-audit|{tenant}|{seq}|{chain}".encode()


@dataclass(frozen=True, slots=True)
class VerifyReport:
    ok: bool
    links: int
    checkpoints: int
    broken_at: int | None = None  # the first chain sequence number that does not hold
    reason: str = ""


class AuditTrail:
    def __init__(self, signer: AuditSigner, checkpoint_every: int = 256) -> None:
        self.signer = signer
        self.checkpoint_every = checkpoint_every
        self._since_checkpoint: dict[str, int] = {}
        self._head_seq: dict[str, int] = {}  # the last chain link a checkpoint has seen, per tenant

    async def record(self, repo: Repository, event: dict[str, Any]) -> None:
        """Write one AuditEvent durably (it joins a group commit) and sign a checkpoint when due."""
        await repo.create(event, resource_type="AuditEvent", server_built=True)
        count = self._since_checkpoint.get(repo.tenant, 0) + 1
        self._since_checkpoint[repo.tenant] = count
        if count >= self.checkpoint_every:
            self._since_checkpoint[repo.tenant] = 0
            try:
                await self.checkpoint(repo.store)
            except Exception:  # the event is written; the next checkpoint covers it
                log.exception("tenant %s: signing an audit checkpoint failed", repo.tenant)

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
