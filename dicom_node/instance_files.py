"""Reading and sealing the stored DICOM objects.

With encryption on, each object is sealed (AES-256-GCM) under its own random key as it is staged;
that key is sealed under the patient's data key and kept in the instance's index record. Erasing
the patient destroys the data key, so no copy of the file (a backup, a disk block) opens again.
Objects stored while encryption was off stay readable as they are.
"""

from __future__ import annotations

import asyncio
import io
import os

import orjson
from pydicom import Dataset, dcmread

from dicom_node.blobs import BlobKey, BlobStore
from fhir_server.crypto.master import open_sealed, seal
from fhir_server.storage.port import Record, TenantReader, TenantTransaction

SEALED = b"DBB1"


class ObjectErased(LookupError):
    """The object's key is gone (its patient was erased)."""


def new_object_key() -> bytes:
    return os.urandom(32)


def seal_object(data: bytes, key: bytes, instance_uid: str) -> bytes:
    return SEALED + seal(key, data, instance_uid.encode())


async def seal_object_key(
    tx: TenantTransaction, patient_id: str, key: bytes, instance_uid: str
) -> dict[str, str] | None:
    """The object key sealed under the patient's data key, for the instance record (None: no encryption)."""
    if tx.encryption is None:
        return None
    return await tx.encryption.seal_secret(f"Patient/{patient_id}", key, instance_uid.encode())


def with_object_key(record: Record, sealed: dict[str, str] | None) -> Record:
    if sealed is None:
        return record
    body = {**orjson.loads(record.body), "objectKey": sealed}
    return Record(record.collection, record.key, orjson.dumps(body), record.fields)


class InstanceFiles:
    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs

    @staticmethod
    def key(tenant: str, record: Record) -> BlobKey:
        fields = record.fields
        return BlobKey(tenant, fields["StudyInstanceUID"][0], fields["SeriesInstanceUID"][0], record.key)

    async def read_bytes(self, store: TenantReader, tenant: str, record: Record) -> bytes:
        raw = await self.blobs.read(self.key(tenant, record))
        if not raw.startswith(SEALED):
            return raw
        sealed = orjson.loads(record.body).get("objectKey")
        if sealed is None or store.encryption is None:
            raise ObjectErased(f"instance {record.key}: no key to open it")
        key = await store.encryption.open_secret(sealed, record.key.encode())
        if key is None:
            raise ObjectErased(f"instance {record.key}: its patient was erased")
        return open_sealed(key, raw[len(SEALED) :], record.key.encode())

    async def read_dataset(self, store: TenantReader, tenant: str, record: Record) -> Dataset:
        data = await self.read_bytes(store, tenant, record)
        return await asyncio.to_thread(dcmread, io.BytesIO(data))
