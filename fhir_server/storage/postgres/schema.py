"""The PostgreSQL layout: a control schema listing the tenants, and one schema per tenant.

``migrate`` brings every tenant schema to the current version; it holds a transaction-scoped advisory
lock, so several processes starting at once migrate one after the other, and each step runs once
(the version it reached is kept in ``_dermbridge.tenant``, in the same transaction).
Text compared, sorted or matched with LIKE is ``COLLATE "C"``: byte order as in the SQLite engine,
and plain btree indexes serve prefix matches; ``:contains`` uses a trigram (pg_trgm) GIN index.
"""

from __future__ import annotations

import asyncpg

from fhir_server.storage.sqlite.engine import check_tenant_name as check_portable_name

CONTROL_SCHEMA = "_dermbridge"  # a leading "_" is no valid tenant name: it never collides with one
MIGRATION_LOCK = "dermbridge:migrate"


def check_tenant_name(name: str) -> None:
    """The engines' tenant name rule (at most 63: PostgreSQL's identifier length); ``public`` is taken."""
    check_portable_name(name)
    if name == "public":
        raise ValueError("invalid tenant name 'public': PostgreSQL's default schema has it")


def quote_ident(name: str) -> str:
    """An SQL identifier, quoted (names are checked before they get here; quoting keeps '-' legal)."""
    return '"' + name.replace('"', '""') + '"'


_V1 = """
CREATE TABLE {s}.resource (
    rid bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    type text COLLATE "C" NOT NULL,
    id text COLLATE "C" NOT NULL,
    version integer NOT NULL,
    last_updated text NOT NULL,
    last_updated_ts double precision NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    UNIQUE (type, id)
);
CREATE INDEX resource_type_updated ON {s}.resource (type, last_updated_ts);

CREATE TABLE {s}.history (
    hid bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rid bigint NOT NULL,
    type text COLLATE "C" NOT NULL,
    id text COLLATE "C" NOT NULL,
    version integer NOT NULL,
    last_updated text NOT NULL,
    last_updated_ts double precision NOT NULL,
    method text NOT NULL,
    content bytea,
    UNIQUE (rid, version)
);
CREATE INDEX history_updated ON {s}.history (last_updated_ts);
CREATE INDEX history_type_updated ON {s}.history (type, last_updated_ts);

CREATE TABLE {s}.idx_token (
    rid bigint NOT NULL, type text COLLATE "C" NOT NULL, param text COLLATE "C" NOT NULL,
    system text COLLATE "C", code text COLLATE "C", text text COLLATE "C", grp integer
);
CREATE INDEX idx_token_code ON {s}.idx_token (type, param, code, system);
CREATE INDEX idx_token_rid ON {s}.idx_token (rid, param);

CREATE TABLE {s}.idx_string (
    rid bigint NOT NULL, type text COLLATE "C" NOT NULL, param text COLLATE "C" NOT NULL,
    norm text COLLATE "C" NOT NULL, exact text COLLATE "C" NOT NULL, grp integer
);
CREATE INDEX idx_string_norm ON {s}.idx_string (type, param, norm);
CREATE INDEX idx_string_trgm ON {s}.idx_string USING gin (norm {trgm}.gin_trgm_ops);
CREATE INDEX idx_string_rid ON {s}.idx_string (rid, param);

CREATE TABLE {s}.idx_date (
    rid bigint NOT NULL, type text COLLATE "C" NOT NULL, param text COLLATE "C" NOT NULL,
    low double precision NOT NULL, high double precision NOT NULL, grp integer
);
CREATE INDEX idx_date_low ON {s}.idx_date (type, param, low);
CREATE INDEX idx_date_rid ON {s}.idx_date (rid, param);

CREATE TABLE {s}.idx_number (
    rid bigint NOT NULL, type text COLLATE "C" NOT NULL, param text COLLATE "C" NOT NULL,
    low double precision NOT NULL, high double precision NOT NULL, grp integer
);
CREATE INDEX idx_number_low ON {s}.idx_number (type, param, low);
CREATE INDEX idx_number_rid ON {s}.idx_number (rid, param);

CREATE TABLE {s}.idx_quantity (
    rid bigint NOT NULL, type text COLLATE "C" NOT NULL, param text COLLATE "C" NOT NULL,
    low double precision NOT NULL, high double precision NOT NULL,
    system text COLLATE "C", code text COLLATE "C", grp integer
);
CREATE INDEX idx_quantity_low ON {s}.idx_quantity (type, param, low);
CREATE INDEX idx_quantity_rid ON {s}.idx_quantity (rid, param);

CREATE TABLE {s}.idx_reference (
    rid bigint NOT NULL, type text COLLATE "C" NOT NULL, param text COLLATE "C" NOT NULL,
    target_type text COLLATE "C", target_id text COLLATE "C", url text COLLATE "C", grp integer
);
CREATE INDEX idx_reference_target ON {s}.idx_reference (type, param, target_id, target_type);
CREATE INDEX idx_reference_reverse ON {s}.idx_reference (target_type, target_id);
CREATE INDEX idx_reference_url ON {s}.idx_reference (type, param, url);
CREATE INDEX idx_reference_rid ON {s}.idx_reference (rid, param);

CREATE TABLE {s}.idx_uri (
    rid bigint NOT NULL, type text COLLATE "C" NOT NULL, param text COLLATE "C" NOT NULL,
    value text COLLATE "C" NOT NULL, grp integer
);
CREATE INDEX idx_uri_value ON {s}.idx_uri (type, param, value);
CREATE INDEX idx_uri_rid ON {s}.idx_uri (rid, param);

CREATE TABLE {s}.record (
    rid bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    collection text COLLATE "C" NOT NULL,
    key text COLLATE "C" NOT NULL,
    body bytea NOT NULL,
    UNIQUE (collection, key)
);
CREATE TABLE {s}.record_field (
    rid bigint NOT NULL,
    collection text COLLATE "C" NOT NULL,
    field text COLLATE "C" NOT NULL,
    value text COLLATE "C" NOT NULL
);
CREATE INDEX record_field_value ON {s}.record_field (collection, field, value);
CREATE INDEX record_field_rid ON {s}.record_field (rid);

CREATE TABLE {s}.outbox (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic text NOT NULL,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
-- a consumer's row per event from materialised_through down to acked_through: what claims lock
CREATE TABLE {s}.outbox_delivery (
    consumer text COLLATE "C" NOT NULL,
    seq bigint NOT NULL,
    lease_until double precision NOT NULL,
    attempts integer NOT NULL,
    acked boolean NOT NULL DEFAULT false,
    PRIMARY KEY (consumer, seq)
);
CREATE INDEX outbox_delivery_open ON {s}.outbox_delivery (consumer, seq) WHERE NOT acked;
CREATE TABLE {s}.outbox_cursor (
    consumer text COLLATE "C" PRIMARY KEY,
    acked_through bigint NOT NULL,
    materialised_through bigint NOT NULL
);

CREATE TABLE {s}.audit_chain (
    seq bigint PRIMARY KEY,
    resource_id text NOT NULL,
    content_hash text NOT NULL,
    chain_hash text NOT NULL,
    indexed boolean NOT NULL DEFAULT true,
    staged_seq bigint
);
CREATE INDEX audit_chain_staged ON {s}.audit_chain (staged_seq) WHERE staged_seq IS NOT NULL;
CREATE INDEX audit_chain_unindexed ON {s}.audit_chain (seq) WHERE NOT indexed;
CREATE TABLE {s}.audit_checkpoint (
    seq bigint PRIMARY KEY,
    chain_hash text NOT NULL,
    signature bytea NOT NULL,
    algorithm text NOT NULL,
    key_id text NOT NULL,
    staged_seq bigint,
    loaded_seq bigint,
    signed_at text
);
"""

# The DICOM object store (``dicom_node.blobs_postgres``): an object's chunks (at most 1 MiB each) in
# ``blob_chunk``; ``key`` is NULL while the object is staged (by ``staged_by``: host.pid). Chunks are
# ciphertext, which TOAST's pglz gives up compressing after its first KiB; ``SET STORAGE EXTERNAL`` would skip
# even that, but Citus refuses that ALTER TABLE in a distributed schema.
_V2 = """
CREATE TABLE {s}.blob (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key text COLLATE "C" UNIQUE,
    study text COLLATE "C",
    size bigint NOT NULL,
    staged_by text COLLATE "C" NOT NULL,
    staged_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX blob_study ON {s}.blob (study);
CREATE INDEX blob_staged ON {s}.blob (staged_at) WHERE key IS NULL;
CREATE TABLE {s}.blob_chunk (
    blob bigint NOT NULL REFERENCES {s}.blob (id) ON DELETE CASCADE,
    seq integer NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (blob, seq)
);
"""

# Each step takes a tenant schema from version i to i + 1; append, never edit a released step.
TENANT_STEPS: tuple[str, ...] = (_V1, _V2)
SCHEMA_VERSION = len(TENANT_STEPS)

_CONTROL = f"""
CREATE SCHEMA IF NOT EXISTS {CONTROL_SCHEMA};
CREATE TABLE IF NOT EXISTS {CONTROL_SCHEMA}.tenant (
    name text COLLATE "C" PRIMARY KEY,
    schema_version integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE EXTENSION IF NOT EXISTS pg_trgm;
"""


def statements(script: str) -> list[str]:
    """A step's statements, one by one: Citus sends each DDL statement of a distributed schema on to the worker
    holding it as one prepared statement, which may hold one command only (the steps have no ``;`` but at ends)."""
    return [s.strip() for s in script.split(";\n") if s.strip()]


async def xact_lock(conn: asyncpg.Connection, name: str) -> None:
    """Wait for the advisory lock of that name, held until the caller's transaction ends."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", name)


async def _trgm_schema(conn: asyncpg.Connection) -> str:
    name = await conn.fetchval(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pg_trgm'"
    )
    return quote_ident(str(name))


async def _upgrade(conn: asyncpg.Connection, name: str, version: int) -> None:
    """Run the steps after ``version`` on one tenant schema (in the caller's locked transaction)."""
    if version >= SCHEMA_VERSION:
        return
    trgm = await _trgm_schema(conn)
    for step in TENANT_STEPS[version:]:
        for statement in statements(step.format(s=quote_ident(name), trgm=trgm)):
            await conn.execute(statement)
    await conn.execute(f"UPDATE {CONTROL_SCHEMA}.tenant SET schema_version = $1 WHERE name = $2", SCHEMA_VERSION, name)


async def migrate(conn: asyncpg.Connection) -> None:
    """The control schema, then every tenant schema at the current version. Idempotent."""
    async with conn.transaction():
        await xact_lock(conn, MIGRATION_LOCK)
        await conn.execute(_CONTROL)
        rows = await conn.fetch(f"SELECT name, schema_version FROM {CONTROL_SCHEMA}.tenant ORDER BY name")
        for row in rows:
            await _upgrade(conn, row["name"], row["schema_version"])


async def create_tenant(conn: asyncpg.Connection, name: str) -> None:
    """The tenant's schema and tables, when missing (the name is checked first)."""
    check_tenant_name(name)
    async with conn.transaction():
        await xact_lock(conn, MIGRATION_LOCK)
        await conn.execute(_CONTROL)
        version = await conn.fetchval(f"SELECT schema_version FROM {CONTROL_SCHEMA}.tenant WHERE name = $1", name)
        if version is None:
            await conn.execute(f"CREATE SCHEMA {quote_ident(name)}")
            await conn.execute(f"INSERT INTO {CONTROL_SCHEMA}.tenant (name, schema_version) VALUES ($1, 0)", name)
            version = 0
        await _upgrade(conn, name, version)


async def tenant_exists(conn: asyncpg.Connection, name: str) -> bool:
    """One primary-key lookup; before the control schema exists, no tenant does."""
    try:
        return bool(await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {CONTROL_SCHEMA}.tenant WHERE name = $1)", name))
    except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
        return False


async def tenant_names(conn: asyncpg.Connection) -> list[str]:
    """The tenants, in one statement (every outbox round and sweep lists them); none before the first
    migration created the control table."""
    try:
        rows = await conn.fetch(f"SELECT name FROM {CONTROL_SCHEMA}.tenant ORDER BY name")
    except asyncpg.UndefinedTableError:
        return []
    return [row["name"] for row in rows]
