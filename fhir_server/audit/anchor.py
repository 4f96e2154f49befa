"""The audit trail's external anchor: every signed head is also appended to a witness file outside
the tenant's database (``<data>/audit-anchors/<tenant>.jsonl`` unless configured) and to the log.

Whoever can rewrite the database cannot make it forget its heads: ``verify`` compares the chain
with the newest anchored head, so a truncated, wiped or re-hashed trail is found even when the
database's own checkpoints went with it (RFC 6962 section 3.5 in spirit: a signed tree head kept
where the log's writer cannot change it). Point the directory at storage the server's host cannot
rewrite (a write-once mount, a log shipper) for the strongest guarantee.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
from pathlib import Path

import orjson

from fhir_server.storage.port import AuditCheckpoint

log = logging.getLogger(__name__)
MAX_LINE = 64 * 1024  # a head is a few kilobytes (an ML-DSA-65 signature is 3,309 bytes)


class AnchorFile:
    """Append-only JSON lines, one signed head each, one file per tenant (mode 0600, directory 0700)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, tenant: str) -> Path:
        return self.directory / f"{tenant}.jsonl"

    def append(self, tenant: str, head: AuditCheckpoint) -> None:
        """Write and fsync one head (``O_APPEND``: lines of several processes never interleave)."""
        line = orjson.dumps(_as_json(tenant, head)) + b"\n"
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path(tenant), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        log.info("audit head of tenant %s: event %d, chain %s, staged %s, signed %s", tenant, head.seq,
                 head.chain_hash, head.staged_seq, head.signed_at)  # fmt: skip

    def heads(self, tenant: str) -> list[AuditCheckpoint] | None:
        """Every anchored head of ``tenant``; None when there is no anchor file. A line that does not
        parse is skipped with an error logged (a torn last line after a crash)."""
        path = self.path(tenant)
        if not path.exists():
            return None
        heads = []
        with path.open("rb") as handle:
            for number, line in enumerate(handle, 1):
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    if len(line) <= MAX_LINE and line.strip():
                        heads.append(_from_json(orjson.loads(line)))
                        continue
                if line.strip():
                    log.error("%s line %d is not a signed head", path, number)
        return heads


def _as_json(tenant: str, head: AuditCheckpoint) -> dict[str, object]:
    return {"tenant": tenant, "seq": head.seq, "chain": head.chain_hash, "staged": head.staged_seq,
            "loaded": head.loaded_seq, "signedAt": head.signed_at, "algorithm": head.algorithm,
            "keyId": head.key_id, "signature": base64.b64encode(head.signature).decode()}  # fmt: skip


def _from_json(data: dict[str, object]) -> AuditCheckpoint:
    def number(key: str) -> int:
        value = data[key]
        if not isinstance(value, int):
            raise TypeError(key)
        return value

    return AuditCheckpoint(number("seq"), str(data["chain"]), base64.b64decode(str(data["signature"])),
                           str(data["algorithm"]), str(data["keyId"]), number("staged"), number("loaded"),
                           str(data["signedAt"]))  # fmt: skip
