"""SQLite specifics the contract cannot see: which commits wait for the disk."""

from __future__ import annotations

import hashlib
from pathlib import Path

import orjson
import pytest

from fhir_server.search.extract import index_resource
from fhir_server.storage.port import AuditEntry
from fhir_server.storage.sqlite import SqliteEngine
from fhir_server.storage.sqlite.audit import STAGE_CHUNK, stage
from fhir_server.storage.sqlite.schema import connect, initialise_staging

pytestmark = pytest.mark.anyio
FULL = 2


async def test_audit_index_commits_leave_the_connection_durable(tmp_path: Path) -> None:
    """Index rows, and the removal of loaded events from the staging log, commit without an fsync;
    every later commit on either connection is fsynced again."""
    engine = SqliteEngine(tmp_path / "var")
    await engine.open()
    await engine.create_tenant("alpha")
    store = await engine.tenant("alpha")
    try:
        body = {"resourceType": "AuditEvent", "id": "ae0", "meta": {"versionId": "1"}, "type": {"code": "rest"},
                "recorded": "2026-01-01T00:00:00Z", "agent": [], "source": {}}  # fmt: skip
        content = orjson.dumps(body)
        digest = hashlib.sha256(content).hexdigest()
        async with store.transaction() as tx:
            await tx.append_audit(AuditEntry(0, "ae0", "2026-01-01T00:00:00Z", content, digest))
        pending = await store.pending_audit(0, 10)
        assert await store.index_audit([(pending[0].seq, index_resource(body))]) == 1
        await store.append_audit(AuditEntry(0, "ae1", "2026-01-01T00:00:00Z", content, digest))
        staged = await store.staged_audit(0, 10)
        assert await store.load_audit([(staged[0].seq, None)]) == 1
        assert await store.staged_audit(0, 10) == []
        assert store._main.conn.execute("PRAGMA synchronous").fetchone()[0] == FULL
        assert store._staging.conn.execute("PRAGMA synchronous").fetchone()[0] == FULL
        for reader in store._readers._queue:  # type: ignore[attr-defined]
            assert reader.execute("PRAGMA synchronous").fetchone()[0] == FULL
    finally:
        await engine.close()


def test_a_group_larger_than_one_insert_is_staged_in_one_transaction(tmp_path: Path) -> None:
    """More events than one INSERT takes: several statements, committed together."""
    conn = connect(str(tmp_path / "alpha.auditlog"))
    initialise_staging(conn)
    try:
        entries = [AuditEntry(0, f"ae{n}", "2026-01-01T00:00:00Z", b"{}", "00") for n in range(STAGE_CHUNK + 5)]
        assert stage(conn, entries) == [None] * len(entries)
        assert not conn.in_transaction
        rows = conn.execute("SELECT seq, resource_id FROM audit_staged ORDER BY seq").fetchall()
        assert [row[1] for row in rows] == [e.resource_id for e in entries]
        assert [row[0] for row in rows] == list(range(1, len(entries) + 1))
    finally:
        conn.close()
