"""Per-tenant settings kept in the tenant's own database (a record each), so that a change made by
the CLI or the API is seen by every process serving the tenant on its next read, without a restart.

Values are small JSON documents. They are configuration, never personal data (records are not
encrypted), and each setting's owner validates what it stores.
"""

from __future__ import annotations

from typing import Any

import orjson

from fhir_server.storage.port import Record, TenantReader, TenantStore

SETTINGS = "tenant.settings"
MAX_SETTING_BYTES = 65_536


async def read_setting(reader: TenantReader, name: str) -> Any | None:
    """The setting's value, or None when it was never set."""
    record = await reader.get_record(SETTINGS, name)
    return None if record is None else orjson.loads(record.body)


async def write_setting(store: TenantStore, name: str, value: Any) -> None:
    """Store the setting's new value (None removes it) in a transaction of its own."""
    async with store.transaction() as tx:
        if value is None:
            await tx.delete_record(SETTINGS, name)
            return
        body = orjson.dumps(value)
        if len(body) > MAX_SETTING_BYTES:
            raise ValueError(f"the setting {name!r} is larger than {MAX_SETTING_BYTES} bytes")
        await tx.put_record(Record(SETTINGS, name, body, {}))
