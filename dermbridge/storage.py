"""The storage engine every process opens (the one the ``storage`` setting names, wrapped in envelope
encryption when it is on), its audit trail, and the DICOM object store (the ``blobs`` setting)."""

from __future__ import annotations

import importlib
from typing import cast

from dermbridge.settings import Settings
from dermbridge.storage_url import BlobUrl, StorageUrl
from dicom_node.blobs import BlobStore, FileBlobStore
from fhir_server.audit.anchor import AnchorFile
from fhir_server.audit.signing import load_signer
from fhir_server.audit.trail import LOAD_BATCH, AuditTrail
from fhir_server.crypto.master import load_master_keys
from fhir_server.crypto.store import EncryptingEngine
from fhir_server.storage.port import Engine
from fhir_server.storage.sqlite import SqliteEngine

POSTGRES_MODULE = "fhir_server.storage.postgres"
POSTGRES_BLOBS_MODULE = "dicom_node.blobs_postgres"


class EngineUnavailable(RuntimeError):
    """The ``storage`` setting names an engine this build does not have."""


def plain_engine(url: StorageUrl, settings: Settings) -> Engine:
    """The engine ``url`` names, storing what it is given (no encryption): SQLite, or PostgreSQL
    (imported only when asked for: its driver is not needed to run on SQLite)."""
    if url.engine == "sqlite":
        assert url.path is not None
        return SqliteEngine(url.path, readers=settings.sqlite_readers)
    try:
        module = importlib.import_module(POSTGRES_MODULE)
    except ImportError as exc:
        raise EngineUnavailable(
            f"storage {url.shown()}: the PostgreSQL engine ({POSTGRES_MODULE}) is not available in this build ({exc})"
        ) from exc
    return cast(Engine, module.PostgresEngine(url.url, pool_size=settings.postgres_pool_size))


def open_blobs(url: BlobUrl) -> BlobStore:
    """The object store ``url`` names (not opened yet): a file tree, or the PostgreSQL database's tables."""
    if url.path is not None:
        return FileBlobStore(url.path)
    assert url.dsn, "blobs=postgresql with the storage it lives in"
    module = importlib.import_module(POSTGRES_BLOBS_MODULE)  # asyncpg only when asked for
    return cast(BlobStore, module.PostgresBlobStore(url.dsn))


def encrypted(engine: Engine, settings: Settings) -> Engine:
    """``engine`` in envelope encryption when it is on (the master keys under ``data_dir/keys``)."""
    if not settings.encryption_enabled:
        return engine
    masters = load_master_keys(settings.data_dir / "keys", settings.master_key_kind, settings.master_key)
    return EncryptingEngine(engine, masters)


def open_engine(settings: Settings, url: StorageUrl | None = None) -> Engine:
    """The engine at ``url`` (default: the ``storage`` setting) as every process uses it."""
    return encrypted(plain_engine(url or settings.storage_url(), settings), settings)


def open_audit_trail(settings: Settings, load_batch: int = LOAD_BATCH) -> AuditTrail:
    """The trail with the server's signing key, the checkpoint cadence and the anchor file."""
    return AuditTrail(
        load_signer(settings.data_dir / "keys"),
        settings.audit_checkpoint_every,
        load_batch=load_batch,
        head_interval=settings.audit_checkpoint_interval_s,
        anchors=AnchorFile(settings.audit_anchor_root()),
    )
