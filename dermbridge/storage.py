"""The storage engine every process opens: SQLite, wrapped in envelope encryption when it is on."""

from __future__ import annotations

from dermbridge.settings import Settings
from fhir_server.crypto.master import load_master_keys
from fhir_server.crypto.store import EncryptingEngine
from fhir_server.storage.port import Engine
from fhir_server.storage.sqlite import SqliteEngine


def open_engine(settings: Settings) -> Engine:
    engine: Engine = SqliteEngine(settings.data_dir, readers=settings.sqlite_readers)
    if settings.encryption_enabled:
        masters = load_master_keys(settings.data_dir / "keys", settings.master_key_kind, settings.master_key)
        engine = EncryptingEngine(engine, masters)
    return engine
