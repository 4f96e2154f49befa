"""Master keys: they wrap tenant keys and nothing else.

- ``AesMasterKey``: 32 random bytes, from a key file (``DATA_DIR/keys/master-<n>.key``, created
  owner-only on first start) or the ``DERMBRIDGE_MASTER_KEY`` environment variable (base64).
- ``HybridMasterKey``: an X25519 key and an ML-KEM-768 key. A wrap encapsulates to both and
  derives the wrapping key from both shared secrets (HKDF-SHA256), so it holds as long as either
  problem stays hard: X25519 against today's attackers, ML-KEM against a quantum one.

Wrapped blobs are AES-256-GCM with the caller's associated data and start with a format tag.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fhir_server.security.keyfile import read_or_create_secret

NONCE = 12
_AES_TAG, _HYBRID_TAG = b"AM1", b"HM1"
_X25519, _MLKEM_CT = 32, 1088


class UnwrapError(ValueError):
    """A wrapped key does not open with this master key (wrong key, or tampered)."""


class MasterKey(Protocol):
    @property
    def key_id(self) -> str: ...

    def wrap(self, secret: bytes, aad: bytes) -> bytes: ...

    def unwrap(self, blob: bytes, aad: bytes) -> bytes: ...


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """AES-256-GCM: nonce || ciphertext+tag."""
    nonce = os.urandom(NONCE)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def open_sealed(key: bytes, blob: bytes, aad: bytes) -> bytes:
    from cryptography.exceptions import InvalidTag

    try:
        return AESGCM(key).decrypt(blob[:NONCE], blob[NONCE:], aad)
    except (InvalidTag, ValueError) as exc:
        raise UnwrapError("the ciphertext does not open with this key") from exc


@dataclass(frozen=True, slots=True)
class AesMasterKey:
    key_id: str
    secret: bytes

    @classmethod
    def of(cls, secret: bytes) -> AesMasterKey:
        if len(secret) != 32:
            raise ValueError("a master key is 32 bytes")
        return cls("aes-" + hashlib.sha256(b"dermbridge master" + secret).hexdigest()[:16], secret)

    def wrap(self, secret: bytes, aad: bytes) -> bytes:
        return _AES_TAG + seal(self.secret, secret, aad)

    def unwrap(self, blob: bytes, aad: bytes) -> bytes:
        if not blob.startswith(_AES_TAG):
            raise UnwrapError("not an AES master-key wrap")
        return open_sealed(self.secret, blob[len(_AES_TAG) :], aad)


@dataclass(frozen=True, slots=True)
class HybridMasterKey:
    key_id: str
    classical: x25519.X25519PrivateKey
    quantum: mlkem.MLKEM768PrivateKey

    @classmethod
    def of(cls, material: bytes) -> HybridMasterKey:
        if len(material) != 96:
            raise ValueError("a hybrid master key is 32 bytes of X25519 and a 64-byte ML-KEM-768 seed")
        classical = x25519.X25519PrivateKey.from_private_bytes(material[:32])
        quantum = mlkem.MLKEM768PrivateKey.from_seed_bytes(material[32:])
        public = classical.public_key().public_bytes_raw() + quantum.public_key().public_bytes_raw()
        return cls("hybrid-" + hashlib.sha256(public).hexdigest()[:16], classical, quantum)

    @staticmethod
    def _kek(dh: bytes, shared: bytes, aad: bytes) -> bytes:
        return HKDF(hashes.SHA256(), 32, salt=None, info=b"dermbridge hybrid wrap|" + aad).derive(dh + shared)

    def wrap(self, secret: bytes, aad: bytes) -> bytes:
        ephemeral = x25519.X25519PrivateKey.generate()
        dh = ephemeral.exchange(self.classical.public_key())
        shared, encapsulated = self.quantum.public_key().encapsulate()
        kek = self._kek(dh, shared, aad)
        return _HYBRID_TAG + ephemeral.public_key().public_bytes_raw() + encapsulated + seal(kek, secret, aad)

    def unwrap(self, blob: bytes, aad: bytes) -> bytes:
        if not blob.startswith(_HYBRID_TAG):
            raise UnwrapError("not a hybrid master-key wrap")
        body = blob[len(_HYBRID_TAG) :]
        ephemeral, encapsulated, sealed = (
            body[:_X25519],
            body[_X25519 : _X25519 + _MLKEM_CT],
            body[_X25519 + _MLKEM_CT :],
        )
        try:
            dh = self.classical.exchange(x25519.X25519PublicKey.from_public_bytes(ephemeral))
            shared = self.quantum.decapsulate(encapsulated)
        except ValueError as exc:
            raise UnwrapError("the hybrid wrap is malformed") from exc
        return open_sealed(self._kek(dh, shared, aad), sealed, aad)


class MasterKeys:
    """The current master key (new wraps) and the older ones (still opening what they wrapped)."""

    def __init__(self, keys: list[MasterKey]) -> None:
        if not keys:
            raise ValueError("no master key")
        self.current = keys[-1]
        self.by_id = {k.key_id: k for k in keys}

    def unwrap(self, key_id: str, blob: bytes, aad: bytes) -> bytes:
        key = self.by_id.get(key_id)
        if key is None:
            raise UnwrapError(f"master key {key_id} is not available")
        return key.unwrap(blob, aad)


_FILE = re.compile(r"^master-(aes|hybrid)-(\d+)\.key$")


def _load(kind: str, material: bytes) -> MasterKey:
    return AesMasterKey.of(material) if kind == "aes" else HybridMasterKey.of(material)


def master_files(directory: Path) -> list[tuple[int, str, Path]]:
    found = []
    for path in directory.glob("master-*.key") if directory.exists() else []:
        match = _FILE.match(path.name)
        if match:
            found.append((int(match.group(2)), match.group(1), path))
    return sorted(found)


def new_master_file(directory: Path, kind: str) -> Path:
    """A new, current master key file (rotation: the older files keep opening older wraps)."""
    number = max((n for n, _, _ in master_files(directory)), default=0) + 1
    path = directory / f"master-{kind}-{number}.key"
    read_or_create_secret(path, 32 if kind == "aes" else 96)
    return path


def load_master_keys(directory: Path, kind: str = "aes", environment: str | None = None) -> MasterKeys:
    """Master keys from ``directory`` (the first created when there is none) plus, as the current
    key, the base64 ``environment`` value when given."""
    if not master_files(directory) and not environment:
        new_master_file(directory, kind)
    keys: list[MasterKey] = [_load(k, path.read_bytes()) for _, k, path in master_files(directory)]
    if environment:
        keys.append(AesMasterKey.of(base64.b64decode(environment)))
    return MasterKeys(keys)
