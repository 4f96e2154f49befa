"""A tenant's keys: its tenant keys (wrapped by the master key) and its data keys (one per
patient, one for the tenant's other resources; wrapped by the tenant key), kept as records of the
tenant's own store.

A data key is created on first use inside the writing transaction, and put in every transaction
that uses it until one of them has committed: a key is never known to a reader before the data it
encrypts is. Erasing a patient deletes its data key and leaves a content-free marker, so that the
key cannot come back.
"""

from __future__ import annotations

import asyncio
import base64
import os
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from fhir_server.crypto.master import MasterKeys, open_sealed, seal
from fhir_server.storage.port import Record, ResourceStore, TenantReader, TenantStore, TenantTransaction
from fhir_server.storage.query import RecordQuery

TENANT_KEYS = "crypto.tenant-key"
DATA_KEYS = "crypto.data-key"
ERASED = "crypto.erased"
TENANT_REF = "tenant"


class ErasedSubject(LookupError):
    """The patient was erased: its key is gone for good and new data under it is refused."""


@dataclass(slots=True)
class DataKey:
    key: bytes
    record: Record
    durable: bool  # known to be committed


class TenantKeyring:
    def __init__(self, tenant: str, masters: MasterKeys) -> None:
        self.tenant = tenant
        self.masters = masters
        self.tenant_keys: dict[int, bytes] = {}
        self.current = 0
        self.data: dict[str, DataKey] = {}
        self.erased: set[str] = set()
        self._lock = asyncio.Lock()

    # -- tenant keys -----------------------------------------------------------------------------
    def _tenant_aad(self, version: int) -> bytes:
        return f"tenant-key|{self.tenant}|{version}".encode()

    def _tenant_record(self, version: int, key: bytes) -> Record:
        master = self.masters.current
        body = {"version": version, "master": master.key_id, "created": datetime.now(UTC).isoformat(),
                "wrapped": base64.b64encode(master.wrap(key, self._tenant_aad(version))).decode()}  # fmt: skip
        return Record(TENANT_KEYS, f"{version:06d}", orjson.dumps(body), {"master": (master.key_id,)})

    async def load(self, store: TenantStore) -> None:
        """The tenant keys (the first created now) and the erased markers."""
        async with self._lock:
            records = await store.find_records(RecordQuery(TENANT_KEYS, limit=100_000))
            if not records:
                async with store.transaction() as tx:
                    await tx.put_record(self._tenant_record(1, os.urandom(32)))
                records = await store.find_records(RecordQuery(TENANT_KEYS, limit=100_000))
            for record in records:
                body = orjson.loads(record.body)
                wrapped = base64.b64decode(body["wrapped"])
                self.tenant_keys[body["version"]] = self.masters.unwrap(
                    body["master"], wrapped, self._tenant_aad(body["version"])
                )
            self.current = max(self.tenant_keys)
            erased = await store.find_records(RecordQuery(ERASED, limit=10_000_000))
            self.erased = {r.key for r in erased}

    # -- data keys -------------------------------------------------------------------------------
    def _data_aad(self, ref: str, version: int) -> bytes:
        return f"data-key|{self.tenant}|{ref}|{version}".encode()

    def _data_record(self, ref: str, key: bytes) -> Record:
        version = self.current
        wrapped = seal(self.tenant_keys[version], key, self._data_aad(ref, version))
        body = {"tenantKey": version, "wrapped": base64.b64encode(wrapped).decode()}
        return Record(DATA_KEYS, ref, orjson.dumps(body), {"tenantKey": (str(version),)})

    def _unwrap(self, ref: str, record: Record) -> bytes:
        body = orjson.loads(record.body)
        version = int(body["tenantKey"])
        return open_sealed(self.tenant_keys[version], base64.b64decode(body["wrapped"]), self._data_aad(ref, version))

    async def for_write(self, tx: TenantTransaction, ref: str) -> DataKey:
        """The key to encrypt under ``ref`` in ``tx`` (created when the subject has none yet)."""
        if ref in self.erased:
            raise ErasedSubject(ref)
        known = self.data.get(ref)
        if known is not None:
            return known
        record = await tx.get_record(DATA_KEYS, ref)
        if record is not None:
            known = DataKey(self._unwrap(ref, record), record, True)
        else:
            key = os.urandom(32)
            known = DataKey(key, self._data_record(ref, key), False)
        return self.data.setdefault(ref, known)

    async def for_read(self, reader: TenantReader, ref: str) -> bytes | None:
        """The key ``ref``'s data was encrypted under; None once erased."""
        known = self.data.get(ref)
        if known is not None:
            return known.key
        if ref in self.erased:
            return None
        record = await reader.get_record(DATA_KEYS, ref)
        if record is None:
            return None
        key = self._unwrap(ref, record)
        self.data.setdefault(ref, DataKey(key, record, True))
        return key

    async def erase(self, tx: TenantTransaction, ref: str) -> None:
        """Destroy ``ref``'s data key in ``tx`` (its data becomes ciphertext nobody can open)."""
        await tx.delete_record(DATA_KEYS, ref)
        marker = orjson.dumps({"erased": datetime.now(UTC).isoformat(timespec="seconds")})
        await tx.put_record(Record(ERASED, ref, marker, {}))
        self.data.pop(ref, None)
        self.erased.add(ref)

    # -- rotation --------------------------------------------------------------------------------
    async def rotate_tenant_key(self, store: TenantStore) -> int:
        """A new tenant key; every data key is re-wrapped under it (no data is re-encrypted)."""
        async with self._lock:
            version = self.current + 1
            key = os.urandom(32)
            records = await store.find_records(RecordQuery(DATA_KEYS, limit=10_000_000))
            async with store.transaction() as tx:
                await tx.put_record(self._tenant_record(version, key))
                self.tenant_keys[version], previous = key, self.current
                self.current = version
                try:
                    for record in records:
                        await tx.put_record(self._data_record(record.key, self._unwrap(record.key, record)))
                except BaseException:
                    self.current = previous
                    raise
            self.data.clear()
            return version

    async def rewrap_tenant_keys(self, store: ResourceStore) -> int:
        """Master key rotation: every tenant key re-wrapped under the current master key."""
        async with self._lock, store.transaction() as tx:
            for version, key in self.tenant_keys.items():
                await tx.put_record(self._tenant_record(version, key))
        return len(self.tenant_keys)
