"""The tables of one tenant database."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from urllib.parse import quote

SCHEMA_VERSION = 3

# One table per index kind; ``grp`` ties the components of a composite parameter together.
INDEX_TABLES = {
    "token": "idx_token",
    "string": "idx_string",
    "date": "idx_date",
    "number": "idx_number",
    "quantity": "idx_quantity",
    "reference": "idx_reference",
    "uri": "idx_uri",
}

DDL = """
CREATE TABLE IF NOT EXISTS resource (
    rid INTEGER PRIMARY KEY,
    type TEXT NOT NULL,
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    last_updated TEXT NOT NULL,
    last_updated_ts REAL NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    UNIQUE (type, id)
);
CREATE INDEX IF NOT EXISTS resource_type_updated ON resource (type, last_updated_ts);

CREATE TABLE IF NOT EXISTS history (
    hid INTEGER PRIMARY KEY,
    rid INTEGER NOT NULL,
    type TEXT NOT NULL,
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    last_updated TEXT NOT NULL,
    last_updated_ts REAL NOT NULL,
    method TEXT NOT NULL,
    content BLOB,
    UNIQUE (rid, version)
);
CREATE INDEX IF NOT EXISTS history_updated ON history (last_updated_ts);
CREATE INDEX IF NOT EXISTS history_type_updated ON history (type, last_updated_ts);

CREATE TABLE IF NOT EXISTS idx_token (
    rid INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL,
    system TEXT, code TEXT, text TEXT, grp INTEGER
);
CREATE INDEX IF NOT EXISTS idx_token_code ON idx_token (type, param, code, system);
CREATE INDEX IF NOT EXISTS idx_token_rid ON idx_token (rid, param);

CREATE TABLE IF NOT EXISTS idx_string (
    rid INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL,
    norm TEXT NOT NULL, exact TEXT NOT NULL, grp INTEGER
);
CREATE INDEX IF NOT EXISTS idx_string_norm ON idx_string (type, param, norm);
CREATE INDEX IF NOT EXISTS idx_string_rid ON idx_string (rid, param);

CREATE TABLE IF NOT EXISTS idx_date (
    rid INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL,
    low REAL NOT NULL, high REAL NOT NULL, grp INTEGER
);
CREATE INDEX IF NOT EXISTS idx_date_low ON idx_date (type, param, low);
CREATE INDEX IF NOT EXISTS idx_date_rid ON idx_date (rid, param);

CREATE TABLE IF NOT EXISTS idx_number (
    rid INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL,
    low REAL NOT NULL, high REAL NOT NULL, grp INTEGER
);
CREATE INDEX IF NOT EXISTS idx_number_low ON idx_number (type, param, low);
CREATE INDEX IF NOT EXISTS idx_number_rid ON idx_number (rid, param);

CREATE TABLE IF NOT EXISTS idx_quantity (
    rid INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL,
    low REAL NOT NULL, high REAL NOT NULL, system TEXT, code TEXT, grp INTEGER
);
CREATE INDEX IF NOT EXISTS idx_quantity_low ON idx_quantity (type, param, low);
CREATE INDEX IF NOT EXISTS idx_quantity_rid ON idx_quantity (rid, param);

CREATE TABLE IF NOT EXISTS idx_reference (
    rid INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL,
    target_type TEXT, target_id TEXT, url TEXT, grp INTEGER
);
CREATE INDEX IF NOT EXISTS idx_reference_target ON idx_reference (type, param, target_id, target_type);
CREATE INDEX IF NOT EXISTS idx_reference_reverse ON idx_reference (target_type, target_id);
CREATE INDEX IF NOT EXISTS idx_reference_url ON idx_reference (type, param, url);
CREATE INDEX IF NOT EXISTS idx_reference_rid ON idx_reference (rid, param);

CREATE TABLE IF NOT EXISTS idx_uri (
    rid INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL,
    value TEXT NOT NULL, grp INTEGER
);
CREATE INDEX IF NOT EXISTS idx_uri_value ON idx_uri (type, param, value);
CREATE INDEX IF NOT EXISTS idx_uri_rid ON idx_uri (rid, param);

CREATE TABLE IF NOT EXISTS record (
    rid INTEGER PRIMARY KEY,
    collection TEXT NOT NULL,
    key TEXT NOT NULL,
    body BLOB NOT NULL,
    UNIQUE (collection, key)
);
CREATE TABLE IF NOT EXISTS record_field (
    rid INTEGER NOT NULL,
    collection TEXT NOT NULL,
    field TEXT NOT NULL,
    value TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS record_field_value ON record_field (collection, field, value);
CREATE INDEX IF NOT EXISTS record_field_rid ON record_field (rid);

-- the chain of every AuditEvent; a server-built event is stored and chained at once and its
-- search index rows are added later (indexed = 0 until then)
CREATE TABLE IF NOT EXISTS audit_chain (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    resource_id TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    chain_hash TEXT NOT NULL,
    indexed INTEGER NOT NULL DEFAULT 1,
    staged_seq INTEGER  -- the event's seq in the staging log; NULL: chained in a caller's transaction
);
-- the last staging log seq loaded into this database (one row)
CREATE TABLE IF NOT EXISTS audit_loaded (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    seq INTEGER NOT NULL
);
-- signed heads: the chain up to seq and (NULL in checkpoints of schema 2) the staging log up to
-- staged_seq, loaded up to loaded_seq, at signed_at
CREATE TABLE IF NOT EXISTS audit_checkpoint (
    seq INTEGER PRIMARY KEY,
    chain_hash TEXT NOT NULL,
    signature BLOB NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    staged_seq INTEGER,
    loaded_seq INTEGER,
    signed_at TEXT
);

CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_ts REAL NOT NULL
);

CREATE TABLE IF NOT EXISTS outbox_delivery (
    consumer TEXT NOT NULL,
    seq INTEGER NOT NULL,
    lease_until REAL NOT NULL,
    attempts INTEGER NOT NULL,
    acked INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (consumer, seq)
) WITHOUT ROWID;

-- every event up to acked_through is acknowledged by the consumer: claims start after it
CREATE TABLE IF NOT EXISTS outbox_cursor (
    consumer TEXT PRIMARY KEY,
    acked_through INTEGER NOT NULL
) WITHOUT ROWID;
"""


STAGING_DDL = """
CREATE TABLE IF NOT EXISTS audit_staged (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    resource_id TEXT NOT NULL,
    last_updated TEXT NOT NULL,
    content BLOB NOT NULL,
    content_hash TEXT NOT NULL
);
"""


def staging_path(database: Path) -> Path:
    """The audit staging log beside a tenant database (``audit.stage``)."""
    return database.with_suffix(".auditlog")


def initialise_staging(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(STAGING_DDL)


def create_private(path: Path) -> None:
    """Create a database file readable by the server's user only (0600), when it does not exist.

    SQLite gives its ``-wal`` and ``-shm`` files the database file's mode. ``O_EXCL``: an existing
    file is never opened here, since closing a descriptor of a live database would drop this
    process's locks on it (sqlite.org/howtocorrupt.html, section 2.2)."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def connect(path: str, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection with the pragmas every connection needs. Writes are durable at commit.

    The path is percent-quoted into the URI (RFC 3986, sqlite.org/uri.html): a ``#`` or ``?`` in
    it would otherwise end the file name and open another, empty database."""
    if not readonly:
        create_private(Path(path))
    uri = f"file:{quote(path)}?mode={'ro' if readonly else 'rwc'}"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.execute("PRAGMA synchronous = FULL")  # WAL + FULL: a commit is fsynced before it returns
    conn.execute("PRAGMA cache_size = -65536")
    conn.execute("PRAGMA temp_store = MEMORY")
    conn.execute("PRAGMA mmap_size = 268435456")
    conn.execute("PRAGMA secure_delete = ON")  # deleted rows are overwritten, not left in free pages
    return conn


def initialise(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(DDL)
    _migrate(conn)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    if conn.execute("SELECT COUNT(*) FROM (SELECT 1 FROM resource LIMIT 1000)").fetchone()[0] >= 1000:
        analyze(conn)


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a database of an older schema version up to this one (columns DDL cannot add)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(audit_chain)")}
    if "indexed" not in columns:  # version 2: AuditEvents indexed after they are stored
        conn.execute("ALTER TABLE audit_chain ADD COLUMN indexed INTEGER NOT NULL DEFAULT 1")
    if "staged_seq" not in columns:  # version 3: signed heads cover the staging log
        conn.execute("ALTER TABLE audit_chain ADD COLUMN staged_seq INTEGER")
    if "signed_at" not in {row[1] for row in conn.execute("PRAGMA table_info(audit_checkpoint)")}:
        for column in ("staged_seq INTEGER", "loaded_seq INTEGER", "signed_at TEXT"):
            conn.execute(f"ALTER TABLE audit_checkpoint ADD COLUMN {column}")
    conn.execute(
        "CREATE INDEX IF NOT EXISTS audit_chain_staged ON audit_chain (staged_seq) WHERE staged_seq IS NOT NULL"
    )
    conn.execute("CREATE INDEX IF NOT EXISTS audit_chain_unindexed ON audit_chain (seq) WHERE indexed = 0")


def analyze(conn: sqlite3.Connection) -> None:
    """Planner statistics from a bounded sample of each index: fast even on large databases."""
    conn.execute("PRAGMA analysis_limit = 1000")
    conn.execute("ANALYZE")


def scrub(conn: sqlite3.Connection) -> bool:
    """Leave no copy of deleted rows in the files: planner samples rebuilt from live rows, and the
    WAL checkpointed and truncated (secure_delete already zeroes the pages). False when a reader
    kept the WAL busy."""
    analyze(conn)
    busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    return busy == 0
