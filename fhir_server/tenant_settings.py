"""Per-tenant settings kept in the tenant's own database (a record each), so that a change made by
the CLI or the API is seen by every process serving the tenant on its next read, without a restart.

Values are small JSON documents. They are configuration, never personal data (records are not
encrypted), and each setting's owner validates what it stores.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from fhir_server.audit.events import DCM
from fhir_server.storage.port import Record, ResourceStore, TenantReader, TenantTransaction

SETTINGS = "tenant.settings"
MAX_SETTING_BYTES = 65_536
SECURITY_CONFIGURATION = {"system": DCM, "code": "110129", "display": "Security Configuration"}
SOFTWARE_CONFIGURATION = {"system": DCM, "code": "110131", "display": "Software Configuration"}


async def read_setting(reader: TenantReader, name: str) -> Any | None:
    """The setting's value, or None when it was never set."""
    record = await reader.get_record(SETTINGS, name)
    return None if record is None else orjson.loads(record.body)


async def write_setting(store: ResourceStore, name: str, value: Any) -> None:
    """Store the setting's new value (None removes it) in a transaction of its own."""
    async with store.transaction() as tx:
        await write_setting_in(tx, name, value)


async def write_setting_in(tx: TenantTransaction, name: str, value: Any) -> None:
    """Store the setting's new value (None removes it) within ``tx`` (read-modify-write in one transaction)."""
    if value is None:
        await tx.delete_record(SETTINGS, name)
        return
    body = orjson.dumps(value)
    if len(body) > MAX_SETTING_BYTES:
        raise ValueError(f"the setting {name!r} is larger than {MAX_SETTING_BYTES} bytes")
    await tx.put_record(Record(SETTINGS, name, body, {}))


def setting_event(name: str, subtype: dict[str, str], who: str, description: str) -> dict[str, Any]:
    """A setting's change as an AuditEvent (DICOM "Security Alert", PS3.15 A.5.3.11): what changed and by whom."""
    return {
        "resourceType": "AuditEvent",
        "type": {"system": DCM, "code": "110113", "display": "Security Alert"},
        "subtype": [subtype],
        "action": "U",
        "recorded": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "outcome": "0",
        "outcomeDesc": f"tenant setting {name}: {description}"[:1000],
        "agent": [{"who": {"display": who}, "requestor": True}],
        "source": {"observer": {"display": "DermBridge"},
                   "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4"}]},
    }  # fmt: skip
