"""``dermbridge audit verify`` proves the trail complete: truncated, wiped or re-hashed trails are
found through the signed heads, in the database and in the anchor file beside it (and the CLI says
what is missing, with a non-zero exit)."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import stat
from pathlib import Path

import orjson
import pytest

from tests.conftest import BASE, make_client
from tests.factories import patient
from tests.fhir_server.audit.test_audit_trail import verify

PATIENTS = 24


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory after a server wrote 25 AuditEvents (a token request, 24 creates), a head every 5."""
    data_dir = tmp_path_factory.mktemp("served") / "var"
    with make_client(data_dir, audit_checkpoint_every=5) as client:
        for n in range(PATIENTS):
            assert client.post(f"{BASE}/Patient", json=patient(family=f"P{n}")).status_code == 201
    return data_dir


@pytest.fixture
def data_dir(served: Path, tmp_path: Path) -> Path:
    """A copy of ``served`` to tamper with (the server is stopped: copying its files is safe)."""
    copy = tmp_path / "var"
    shutil.copytree(served, copy)
    return copy


def database(data_dir: Path) -> sqlite3.Connection:
    return sqlite3.connect(data_dir / "tenants" / "default.sqlite", isolation_level=None)


def drop_events_after(data_dir: Path, seq: int, *, with_checkpoints: bool) -> None:
    with database(data_dir) as conn:
        ids = [row[0] for row in conn.execute("SELECT resource_id FROM audit_chain WHERE seq > ?", (seq,))]
        conn.executemany("DELETE FROM history WHERE type = 'AuditEvent' AND id = ?", [(i,) for i in ids])
        conn.executemany("DELETE FROM resource WHERE type = 'AuditEvent' AND id = ?", [(i,) for i in ids])
        conn.execute("DELETE FROM audit_chain WHERE seq > ?", (seq,))
        if with_checkpoints:
            conn.execute("DELETE FROM audit_checkpoint WHERE seq > ?", (seq,))
        conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'audit_chain'", (seq,))


def events(data_dir: Path) -> int:
    with database(data_dir) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM audit_chain").fetchone()[0])


def test_an_untouched_trail_is_intact_and_anchored(served: Path) -> None:
    report = verify(served)
    assert report.returncode == 0, report.stdout + report.stderr
    assert f"{PATIENTS + 1} events, 0 staged" in report.stdout and "anchored in" in report.stdout
    anchors = served / "audit-anchors"
    assert (anchors / "default.jsonl").read_text().count("\n") >= 2  # every 5 events (as loaded) and at the stop
    assert stat.S_IMODE(anchors.stat().st_mode) == 0o700
    assert stat.S_IMODE((anchors / "default.jsonl").stat().st_mode) == 0o600


@pytest.mark.parametrize("with_checkpoints", [False, True], ids=["events", "events-and-their-checkpoints"])
def test_the_last_events_deleted_are_found(data_dir: Path, with_checkpoints: bool) -> None:
    total = events(data_dir)
    drop_events_after(data_dir, total - 10, with_checkpoints=with_checkpoints)
    report = verify(data_dir)
    assert report.returncode == 1, report.stdout
    assert f"BROKEN at event {total - 9}: events {total - 9}..{total} are missing" in report.stdout


def test_events_deleted_with_every_checkpoint_past_them_are_found_through_the_anchor(data_dir: Path) -> None:
    drop_events_after(data_dir, 3, with_checkpoints=True)
    report = verify(data_dir)
    assert report.returncode == 1
    assert "events 4.." in report.stdout and "the head anchored in" in report.stdout


def test_an_event_deleted_and_the_rest_of_the_chain_rehashed_is_found(data_dir: Path) -> None:
    with database(data_dir) as conn:
        conn.execute("DELETE FROM audit_chain WHERE seq = 9")
        conn.execute("DELETE FROM audit_checkpoint WHERE seq >= 9")
        links = conn.execute("SELECT seq, content_hash FROM audit_chain WHERE seq > 9 ORDER BY seq").fetchall()
        previous = conn.execute("SELECT chain_hash FROM audit_chain WHERE seq = 8").fetchone()[0]
        for seq, content_hash in links:  # renumbered and re-hashed: a chain that links end to end
            previous = hashlib.sha256(bytes.fromhex(previous) + bytes.fromhex(content_hash)).hexdigest()
            conn.execute("UPDATE audit_chain SET seq = ?, chain_hash = ? WHERE seq = ?", (seq - 1, previous, seq))
    report = verify(data_dir)
    assert report.returncode == 1
    assert "anchored" in report.stdout and ("missing" in report.stdout or "differs" in report.stdout)


def test_a_wiped_trail_is_found(data_dir: Path) -> None:
    total = events(data_dir)
    drop_events_after(data_dir, 0, with_checkpoints=True)
    report = verify(data_dir)
    assert report.returncode == 1
    assert f"events 1..{total} are missing: the chain ends at event 0" in report.stdout
    shutil.rmtree(data_dir / "audit-anchors")  # the anchor gone as well: still no head to prove anything
    report = verify(data_dir)
    assert report.returncode == 1 and "no signed head" in report.stdout


def test_a_missing_anchor_is_found(data_dir: Path) -> None:
    (data_dir / "audit-anchors" / "default.jsonl").unlink()
    report = verify(data_dir)
    assert report.returncode == 1 and "the anchor is missing" in report.stdout


def test_a_head_rewritten_in_the_anchor_does_not_verify(data_dir: Path) -> None:
    anchor = data_dir / "audit-anchors" / "default.jsonl"
    lines = anchor.read_text().splitlines()
    anchor.write_text("\n".join([*lines[:-1], lines[-1].replace('"seq":', '"seq":1')]) + "\n")
    report = verify(data_dir)
    assert report.returncode == 1 and "invalid signature" in report.stdout


def test_a_write_commits_with_its_audit_event(tmp_path: Path) -> None:
    """Not staged after the commit (a crash in between left writes unaudited): in the write's transaction."""
    data_dir = tmp_path / "var"
    with make_client(data_dir, encryption_enabled=False) as client:
        created = client.post(f"{BASE}/Patient", json=patient()).json()
        ref = f"Patient/{created['id']}"
        client.put(f"{BASE}/{ref}", json={**patient(family="Moved"), "id": created["id"]})
        client.delete(f"{BASE}/{ref}")
        with database(data_dir) as conn:  # as the answers left them: nothing loaded from the staging log yet
            rows = conn.execute(
                "SELECT c.staged_seq, h.content FROM audit_chain c "
                "JOIN history h ON h.type = 'AuditEvent' AND h.id = c.resource_id"
            ).fetchall()
        chained = {
            orjson.loads(content)["subtype"][0]["code"]: staged for staged, content in rows if ref.encode() in content
        }
        assert chained == {"create": None, "update": None, "delete": None}  # chained in the caller's transaction
