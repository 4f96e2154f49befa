"""The audit writer process: AuditEvents durable before the answer, chained, indexed, and written
in process again if the writer dies."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

from fhir_server.audit.remote import HEADER, _acks, _complete_frames, frame
from tests.conftest import BASE, FhirTestClient, make_client
from tests.factories import patient
from tests.fhir_server.audit.test_audit_trail import audit_events, verify


def chain_length(data_dir: Path) -> int:
    with sqlite3.connect(data_dir / "tenants" / "default.sqlite") as conn:
        return int(conn.execute("SELECT COUNT(*) FROM audit_chain").fetchone()[0])


def writer_of(client: FhirTestClient) -> Any:
    writer = client.app.state.audit.writer  # type: ignore[attr-defined]
    assert writer is not None
    return writer


def test_events_are_durable_before_the_answer_and_searchable(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    with make_client(data_dir, audit_writer="process") as client:
        writer = writer_of(client)
        assert writer.alive and writer.pid != os.getpid()
        created = client.post(f"{BASE}/Patient", json=patient()).json()
        before = chain_length(data_dir)
        assert client.get(f"{BASE}/Patient/{created['id']}").status_code == 200
        assert chain_length(data_dir) == before + 1  # committed by the writer before the answer
        reads = [e for e in audit_events(client) if e["subtype"][0]["code"] == "read"]
        assert reads[0]["entity"][0]["what"] == {"reference": f"Patient/{created['id']}"}
    assert not writer.alive  # stopped with the app, after indexing what it held
    report = verify(data_dir)
    assert report.returncode == 0 and "intact" in report.stdout, report.stdout + report.stderr


def test_a_dead_writer_leaves_the_api_auditing_in_process(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    with make_client(data_dir, audit_writer="process") as client:
        writer = writer_of(client)
        client.get(f"{BASE}/metadata")
        os.kill(writer.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while writer.alive and time.monotonic() < deadline:
            client.get(f"{BASE}/metadata")  # requests keep being answered, each with its AuditEvent
        assert not writer.alive
        before = chain_length(data_dir)
        assert client.post(f"{BASE}/Patient", json=patient()).status_code == 201
        assert chain_length(data_dir) == before + 1
    report = verify(data_dir)
    assert report.returncode == 0, report.stdout + report.stderr


def test_frames_are_cut_only_when_complete() -> None:
    data = frame({"a": 1}) + frame({"b": 2})
    messages, used = _complete_frames(bytearray(data + data[:5]))
    assert messages == [{"a": 1}, {"b": 2}] and used == len(data)
    messages, used = _complete_frames(bytearray(data[: HEADER.size + 2]))
    assert messages == [] and used == 0


def test_acknowledgements_keep_the_order_of_the_events() -> None:
    failure = ValueError("disk full")
    acks = b"".join(_acks([None, None, failure, failure, None]))
    messages, _ = _complete_frames(bytearray(acks))
    assert messages == [{"done": 2}, {"failed": 2, "error": "ValueError: disk full"}, {"done": 1}]
