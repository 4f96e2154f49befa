"""The audit loader process: AuditEvents staged durably by the API before the answer, loaded
(chained, indexed) by the loader, and by the API itself if the loader dies."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

from fhir_server.audit.remote import HEADER, frame
from tests.conftest import BASE, FhirTestClient, make_client
from tests.factories import patient
from tests.fhir_server.audit.test_audit_trail import audit_events, verify


def recorded(data_dir: Path) -> set[str]:
    """AuditEvents on disk: staged, or loaded into the chain (one may be on its way between the two)."""
    tenants = data_dir / "tenants"
    with sqlite3.connect(tenants / "default.auditlog") as staging, sqlite3.connect(tenants / "default.sqlite") as db:
        staged = {row[0] for row in staging.execute("SELECT resource_id FROM audit_staged")}
        return staged | {row[0] for row in db.execute("SELECT resource_id FROM audit_chain")}


def chained(data_dir: Path) -> set[str]:
    with sqlite3.connect(data_dir / "tenants" / "default.sqlite") as db:
        return {row[0] for row in db.execute("SELECT resource_id FROM audit_chain")}


def loader_of(client: FhirTestClient) -> Any:
    loader = client.app.state.audit.loader  # type: ignore[attr-defined]
    assert loader is not None
    return loader


def wait_until(condition: Any, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_events_are_durable_before_the_answer_and_loaded_by_the_loader(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    with make_client(data_dir, audit_loader="process") as client:
        loader = loader_of(client)
        assert loader.alive and loader.pid != os.getpid()
        created = client.post(f"{BASE}/Patient", json=patient()).json()
        before = recorded(data_dir)
        assert client.get(f"{BASE}/Patient/{created['id']}").status_code == 200
        after = recorded(data_dir)
        assert len(after - before) == 1  # staged before the answer
        assert wait_until(lambda: after <= chained(data_dir))  # loaded by the loader, no search asked for it
        reads = [e for e in audit_events(client) if e["subtype"][0]["code"] == "read"]
        assert reads[0]["entity"][0]["what"] == {"reference": f"Patient/{created['id']}"}
    assert not loader.alive  # stopped with the app, after loading what was staged
    report = verify(data_dir)
    assert report.returncode == 0 and "intact" in report.stdout, report.stdout + report.stderr


def test_a_dead_loader_leaves_the_api_loading_in_process(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    with make_client(data_dir, audit_loader="process") as client:
        loader = loader_of(client)
        client.get(f"{BASE}/metadata")
        os.kill(loader.pid, signal.SIGKILL)
        assert wait_until(lambda: not loader.alive)
        assert client.post(f"{BASE}/Patient", json=patient()).status_code == 201
        everything = recorded(data_dir)
        assert wait_until(lambda: everything <= chained(data_dir))  # loaded by the API, no search asked for it
    report = verify(data_dir)
    assert report.returncode == 0, report.stdout + report.stderr


def test_frames_carry_a_length_then_json() -> None:
    data = frame({"tenant": "default"})
    (size,) = HEADER.unpack(data[: HEADER.size])
    assert data[HEADER.size :] == b'{"tenant":"default"}' and size == len(data) - HEADER.size
