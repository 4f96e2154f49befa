"""The storage engine port and its engines (SQLite embedded, MongoDB scale-out)."""

from fhir_server.storage.port import (
    Engine,
    HistoryPage,
    HistoryQuery,
    IndexEntries,
    OutboxEvent,
    ResourceKey,
    ResourceVersion,
    TenantStore,
    TenantTransaction,
    TenantUnknownError,
)

__all__ = [
    "Engine",
    "HistoryPage",
    "HistoryQuery",
    "IndexEntries",
    "OutboxEvent",
    "ResourceKey",
    "ResourceVersion",
    "TenantStore",
    "TenantTransaction",
    "TenantUnknownError",
]
