"""Every FHIR interaction leaves an AuditEvent; the trail is append-only, hash-chained and signed."""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.conftest import BASE, ENGINES, FhirTestClient, engine_settings, make_client
from tests.factories import patient


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The trail is written, read and verified on every engine."""
    return engine_settings(request)


AUDIT_EVENT_VERSION = "SELECT h.rowid, h.content FROM history h WHERE h.type = 'AuditEvent' ORDER BY h.hid LIMIT 1"


def tenant_sql(data_dir: Path, engine: dict[str, Any], sql: str, *args: Any) -> Any:
    """Run ``sql`` (``?`` placeholders) on the default tenant's tables directly, as an intruder would;
    the first row it returns, if any."""
    if "storage" not in engine:
        with sqlite3.connect(data_dir / "tenants" / "default.sqlite") as conn:
            return conn.execute(sql, args).fetchone()
    numbered = iter(range(1, len(args) + 1))
    postgres_sql = re.sub(r"\?", lambda _: f"${next(numbered)}", sql).replace("rowid", "hid")

    async def run() -> Any:
        conn = await asyncpg.connect(engine["storage"], server_settings={"search_path": '"default"'})
        try:
            return await conn.fetchrow(postgres_sql, *args)
        finally:
            await conn.close()

    return asyncio.run(run())


def audit_events(client: FhirTestClient, **params: str) -> list[dict[str, Any]]:
    bundle = client.get(f"{BASE}/AuditEvent", params={"_count": "200", **params}).json()
    return [e["resource"] for e in bundle.get("entry", [])]


def verify(data_dir: Path, engine: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
    """``dermbridge audit verify`` of the default tenant, on ``engine`` (default: SQLite in ``data_dir``)."""
    command = [
        sys.executable,
        "-m",
        "dermbridge",
        "audit",
        "verify",
        "--tenant",
        "default",
        "--data-dir",
        str(data_dir),
    ]
    env = {**os.environ, **({"DERMBRIDGE_STORAGE": engine["storage"]} if engine and "storage" in engine else {})}
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)


def test_every_interaction_is_audited(client: FhirTestClient) -> None:
    created = client.post(f"{BASE}/Patient", json=patient()).json()
    client.get(f"{BASE}/Patient/{created['id']}")
    client.get(f"{BASE}/Patient", params={"name": "doe"})
    client.get(f"{BASE}/Patient/missing")
    events = audit_events(client)
    by_code = {e["subtype"][0]["code"]: e for e in events}
    assert {"create", "read", "search-type"} <= set(by_code)
    read = next(e for e in events if e["subtype"][0]["code"] == "read" and e["outcome"] == "0")
    assert read["action"] == "R"
    assert {"reference": f"Patient/{created['id']}"} in [x["what"] for x in read["entity"]]
    assert any(x.get("role", {}).get("code") == "1" for x in read["entity"])  # the patient concerned
    failed = next(e for e in events if e["outcome"] == "4")
    assert failed["outcomeDesc"] == "HTTP 404"
    assert by_code["search-type"]["entity"][0]["query"]
    assert all(e["agent"][0]["requestor"] for e in events)


def test_audit_events_are_append_only(client: FhirTestClient) -> None:
    client.get(f"{BASE}/metadata")
    event = audit_events(client)[0]
    url = f"{BASE}/AuditEvent/{event['id']}"
    assert client.put(url, json=event).status_code == 405
    assert client.patch(url, json=[{"op": "remove", "path": "/outcome"}]).status_code == 405
    assert client.delete(url).status_code == 405
    assert client.delete(f"{BASE}/AuditEvent", params={"outcome": "0"}).status_code == 405
    bundle = {"resourceType": "Bundle", "type": "transaction",
              "entry": [{"request": {"method": "DELETE", "url": f"AuditEvent/{event['id']}"}}]}  # fmt: skip
    assert client.post(BASE, json=bundle).status_code == 405
    assert client.get(url).json()["meta"]["versionId"] == "1"


def test_chain_verifies_and_tampering_is_found(tmp_path: Path, engine: dict[str, Any]) -> None:
    data_dir = tmp_path / "var"
    with make_client(data_dir, audit_checkpoint_every=3, **engine) as client:
        for n in range(5):
            client.post(f"{BASE}/Patient", json=patient(family=f"P{n}"))
    intact = verify(data_dir, engine)
    assert intact.returncode == 0, intact.stdout + intact.stderr
    assert "intact" in intact.stdout and "6 events" in intact.stdout  # the token request and 5 creates
    assert tenant_sql(data_dir, engine, "SELECT COUNT(*) FROM audit_checkpoint")[0] >= 1
    rid, content = tenant_sql(data_dir, engine, AUDIT_EVENT_VERSION + " OFFSET 2")
    tampered = content[:-1] + bytes([content[-1] ^ 1])  # one bit of the stored (encrypted) event
    tenant_sql(data_dir, engine, "UPDATE history SET content = ? WHERE rowid = ?", tampered, rid)
    broken = verify(data_dir, engine)
    assert broken.returncode == 1
    assert "BROKEN at event 3" in broken.stdout and "altered" in broken.stdout


def test_tampering_is_found_without_encryption_too(tmp_path: Path, engine: dict[str, Any]) -> None:
    data_dir = tmp_path / "var"
    with make_client(data_dir, encryption_enabled=False, **engine) as client:
        for n in range(3):
            client.post(f"{BASE}/Patient", json=patient(family=f"P{n}"))
    rid, content = tenant_sql(data_dir, engine, AUDIT_EVENT_VERSION + " OFFSET 1")
    tenant_sql(data_dir, engine, "UPDATE history SET content = ? WHERE rowid = ?", content.replace(b'"0"', b'"8"'), rid)
    broken = verify(data_dir, engine)
    assert broken.returncode == 1 and "BROKEN at event 2" in broken.stdout


def test_a_rewritten_chain_does_not_match_the_signed_checkpoint(tmp_path: Path, engine: dict[str, Any]) -> None:
    data_dir = tmp_path / "var"
    with make_client(data_dir, audit_checkpoint_every=2, **engine) as client:
        for n in range(4):
            client.post(f"{BASE}/Patient", json=patient(family=f"P{n}"))
    # drop the last events and their links, as someone hiding what happened would
    tenant_sql(data_dir, engine, "DELETE FROM audit_chain WHERE seq > 2")
    tenant_sql(data_dir, engine, "UPDATE audit_checkpoint SET chain_hash = 'ff' || substr(chain_hash, 3)")
    broken = verify(data_dir, engine)
    assert broken.returncode == 1
    assert "checkpoint" in broken.stdout
