"""Envelope encryption of stored resource versions (AES-256-GCM under a data key).

A sealed version is ``DBX1 | len(ref) | ref | nonce | ciphertext+tag``: ``ref`` names the data key
(``Patient/<id>`` or ``tenant``), and the associated data binds the ciphertext to the tenant,
type, id and version, so that no stored version can be moved to another place and still open.
"""

from __future__ import annotations

from fhir_server.crypto.master import open_sealed, seal

MAGIC = b"DBX1"


def aad(tenant: str, resource_type: str, id: str, version: int) -> bytes:
    return f"{tenant}|{resource_type}|{id}|{version}".encode()


def seal_content(key: bytes, ref: str, associated: bytes, plaintext: bytes) -> bytes:
    name = ref.encode()
    return MAGIC + bytes([len(name)]) + name + seal(key, plaintext, associated)


def key_ref(blob: bytes) -> str | None:
    """The data key a sealed content names; None for plaintext (stored before encryption was on)."""
    if not blob.startswith(MAGIC):
        return None
    length = blob[len(MAGIC)]
    return blob[len(MAGIC) + 1 : len(MAGIC) + 1 + length].decode()


def open_content(key: bytes, blob: bytes, associated: bytes) -> bytes:
    length = blob[len(MAGIC)]
    return open_sealed(key, blob[len(MAGIC) + 1 + length :], associated)
