"""The storage engine every process opens (SQLite, wrapped in envelope encryption when it is on), and its
audit trail."""

from __future__ import annotations

from dermbridge.settings import Settings
from fhir_server.audit.anchor import AnchorFile
from fhir_server.audit.signing import load_signer
from fhir_server.audit.trail import LOAD_BATCH, AuditTrail
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


def open_audit_trail(settings: Settings, load_batch: int = LOAD_BATCH) -> AuditTrail:
    """The trail with the server's signing key, the checkpoint cadence and the anchor file."""
    return AuditTrail(
        load_signer(settings.data_dir / "keys"),
        settings.audit_checkpoint_every,
        load_batch=load_batch,
        head_interval=settings.audit_checkpoint_interval_s,
        anchors=AnchorFile(settings.audit_anchor_root()),
    )
