"""The server's audit signing key: ML-DSA-65 (FIPS 204) where the installed cryptography has it,
Ed25519 otherwise. Generated on first start, kept readable by the server's user only."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from fhir_server.security.keyfile import read_or_create_secret

try:
    from cryptography.hazmat.primitives.asymmetric import mldsa
except ImportError:  # an older cryptography: Ed25519 only
    mldsa = None  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class AuditSigner:
    algorithm: str
    key_id: str
    _private: Any
    query_key: bytes = b""  # keys the digests of search values in AuditEvents (``events.pseudonymous_query``)

    def sign(self, message: bytes) -> bytes:
        signature: bytes = self._private.sign(message)
        return signature

    def verify(self, signature: bytes, message: bytes) -> bool:
        try:
            self._private.public_key().verify(signature, message)
        except InvalidSignature:
            return False
        return True


def _public_bytes(private: Any) -> bytes:
    public = private.public_key()
    raw: bytes = public.public_bytes_raw()
    return raw


def load_signer(directory: Path) -> AuditSigner:
    """The signing key in ``directory`` (created with mode 0600 when absent)."""
    algorithm = "ML-DSA-65" if mldsa is not None else "Ed25519"
    seed = read_or_create_secret(directory / ("audit-mldsa65.seed" if mldsa is not None else "audit-ed25519.key"), 32)
    if mldsa is not None:
        private: Any = mldsa.MLDSA65PrivateKey.from_seed_bytes(seed)
    else:
        private = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    key_id = hashlib.sha256(_public_bytes(private)).hexdigest()[:16]
    return AuditSigner(algorithm, key_id, private, read_or_create_secret(directory / "audit-query.key", 32))
