"""``dermbridge storage copy``: a tenant served on one engine is served the same from another (SQLite files
to SQLite files here), its audit trail verifying on arrival; a non-empty target is refused."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest

from dermbridge.settings import Settings
from dermbridge.storage import encrypted, open_audit_trail
from dermbridge.storage_copy import CopyRefused, Sides, copy_tenant
from fhir_server.audit.events import rest_event
from fhir_server.storage.sqlite import SqliteEngine
from tests.server import create_client, fetch_token, running_server


def dermbridge(*args: str, storage: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **({"DERMBRIDGE_STORAGE": storage} if storage else {})}
    return subprocess.run([sys.executable, "-m", "dermbridge", *args], capture_output=True, text=True, timeout=120,
                          env=env)  # fmt: skip


def test_a_tenant_copied_to_new_files_is_served_the_same_and_its_trail_verifies(tmp_path: Path) -> None:
    data, target = tmp_path / "var", tmp_path / "copy"
    client = create_client(data)
    with running_server(data, admin=False) as source:
        headers = {"Authorization": f"Bearer {fetch_token(source.root, client)}"}
        patient = {"resourceType": "Patient", "gender": "female", "name": [{"family": "Quist"}]}
        created = httpx2.post(f"{source.base}/Patient", json=patient, headers=headers).json()
        updated = httpx2.put(f"{source.base}/Patient/{created['id']}", headers=headers,
                             json={**created, "birthDate": "1961-04-02"}).json()  # fmt: skip
        observation = {"resourceType": "Observation", "status": "final", "code": {"text": "lesion diameter"},
                       "subject": {"reference": f"Patient/{created['id']}"}}  # fmt: skip
        gone = httpx2.post(f"{source.base}/Observation", json=observation, headers=headers).json()
        assert httpx2.delete(f"{source.base}/Observation/{gone['id']}", headers=headers).status_code in (200, 204)

    migrated = dermbridge("storage", "migrate", "--data-dir", str(data))
    assert migrated.returncode == 0 and "1 tenant database(s) up to date" in migrated.stdout, migrated.stderr
    made = dermbridge("tenant", "create", "default", "--data-dir", str(data), storage=f"sqlite:///{target}")
    assert made.returncode == 0, made.stderr  # a tenant made beforehand holds only its key: copied into
    copied = dermbridge("storage", "copy", "--from", f"sqlite:///{data}", "--to", f"sqlite:///{target}",
                        "--data-dir", str(data))  # fmt: skip
    assert copied.returncode == 0, copied.stderr
    assert re.match(r"tenant default: \d+ resource versions, \d+ records, \d+ audit events", copied.stdout)
    assert "the audit trail verifies on arrival" in copied.stdout
    again = dermbridge("storage", "copy", "--to", f"sqlite:///{target}", "--data-dir", str(data))
    assert again.returncode == 1 and "is not empty" in again.stderr

    with running_server(data, admin=False, env={"DERMBRIDGE_STORAGE": f"sqlite:///{target}"}) as copy:
        headers = {"Authorization": f"Bearer {fetch_token(copy.root, client)}"}  # the client records came along
        read = httpx2.get(f"{copy.base}/Patient/{created['id']}", headers=headers).json()
        assert read == updated  # same content, versionId and lastUpdated
        history = httpx2.get(f"{copy.base}/Patient/{created['id']}/_history", headers=headers).json()
        assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["2", "1"]
        assert httpx2.get(f"{copy.base}/Observation/{gone['id']}", headers=headers).status_code == 410
        found = httpx2.get(f"{copy.base}/Patient", params={"family": "quist", "birthdate": "1961"}, headers=headers)
        assert [e["resource"]["id"] for e in found.json()["entry"]] == [created["id"]]  # indexed anew
        trail = httpx2.get(f"{copy.base}/AuditEvent", params={"entity": f"Patient/{created['id']}"}, headers=headers)
        assert trail.json()["total"] >= 2  # the source's create and update were audited, and came along
    assert (target / "tenants" / "default.sqlite").exists()

    verified = dermbridge("audit", "verify", "--data-dir", str(data), storage=f"sqlite:///{target}")
    assert verified.returncode == 0 and "intact" in verified.stdout, verified.stdout + verified.stderr


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_copy_refuses_one_storage_as_both_ends_and_a_bad_url(tmp_path: Path) -> None:
    data = tmp_path / "var"
    same = dermbridge("storage", "copy", "--to", f"sqlite:///{data}", "--data-dir", str(data))
    assert same.returncode == 2 and "the same storage" in same.stderr
    bad = dermbridge("storage", "copy", "--to", "mysql://db/x", "--data-dir", str(data))
    assert bad.returncode == 2 and "storage must be sqlite:///" in bad.stderr


@pytest.mark.anyio
async def test_a_source_whose_audit_trail_was_altered_is_not_copied(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path / "var")
    trail = open_audit_trail(settings)
    plains = [SqliteEngine(tmp_path / "var"), SqliteEngine(tmp_path / "copy")]
    source, target = (Sides(plain, encrypted(plain, settings)) for plain in plains)
    for side in (source, target):
        await side.readable.open()
    try:
        await source.readable.create_tenant("alpha")
        store = await source.readable.tenant("alpha")
        ids = [await trail.record(store, rest_event(method="GET", path=["Patient", "p1"], params=[], status=200,
                                                     who="alpha.client", address="127.0.0.1", entity="Patient/p1",
                                                     patient="Patient/p1")) for _ in range(3)]  # fmt: skip
        await trail.flush(store)
        await trail.checkpoint(store)
        with sqlite3.connect(tmp_path / "var" / "tenants" / "alpha.sqlite") as conn:  # ciphertext edited on disk
            content = conn.execute("SELECT content FROM history WHERE id = ?", (ids[1],)).fetchone()[0]
            conn.execute(
                "UPDATE history SET content = ? WHERE id = ?", (content[:-1] + bytes([content[-1] ^ 1]), ids[1])
            )
        with pytest.raises(CopyRefused, match="the source's audit trail does not verify"):
            await copy_tenant("alpha", source, target, trail, lambda tenant: f"http://127.0.0.1/fhir/{tenant}")
        assert await target.plain.tenant_names() == []  # refused before anything was written
    finally:
        await trail.close()
        for side in (source, target):
            await side.readable.close()
