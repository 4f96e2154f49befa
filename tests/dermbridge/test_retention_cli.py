"""Issue 14, "Retention and legal hold": ``dermbridge retention`` in a real subprocess against the
SQLite files a running app uses: dry runs change nothing, runs delete only what expired and never what
a legal hold keeps, and two runs at once never delete or audit a resource twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.conftest import BASE, FhirTestClient, make_client
from tests.factories import observation, patient
from tests.server import cli

LATER = (datetime.now(UTC) + timedelta(days=31)).isoformat()  # every resource made now is 30 days old then
SOON = (datetime.now(UTC) + timedelta(days=10)).isoformat()


def retention(data: Path, *args: str) -> Any:
    done = cli("retention", *args, "--data-dir", str(data))
    assert done.returncode == 0, done.stderr
    return done.stdout


def run(data: Path, *args: str) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(retention(data, "run", "--json", *args))
    return report


def setup(client: FhirTestClient, data: Path, free: int) -> tuple[list[str], list[str], str]:
    """A held patient and a free one, each with Observations; a Condition (no policy); Observation kept 30 days."""
    ids = {}
    for name in ("held", "free"):
        ids[name] = client.post(f"{BASE}/Patient", json=patient(family=name)).json()["id"]
    held = [client.post(f"{BASE}/Observation", json=observation(f"Patient/{ids['held']}")).json()["id"]]
    expired = [
        client.post(f"{BASE}/Observation", json=observation(f"Patient/{ids['free']}")).json()["id"] for _ in range(free)
    ]
    condition = {"resourceType": "Condition", "subject": {"reference": f"Patient/{ids['free']}"}}
    other = client.post(f"{BASE}/Condition", json=condition).json()["id"]
    reason = {"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "litigation"}]}
    assert client.post(f"{BASE}/Patient/{ids['held']}/$legal-hold", json=reason).status_code == 201
    retention(data, "set", "Observation", "30")
    return expired, held, other


def test_set_list_dry_run_and_run(tmp_path: Path) -> None:
    data = tmp_path / "var"
    with make_client(data) as client:
        expired, held, condition = setup(client, data, 3)
        assert retention(data, "list").split() == ["Observation", "30", "days", "delete"]
        changes = client.get(f"{BASE}/AuditEvent", params={"subtype": "110131"}).json()["entry"]
        assert [e["resource"]["outcomeDesc"] for e in changes] == [
            "tenant setting retention.policies: now Observation 30 days delete"
        ]
        assert run(data, "--dry-run", "--as-of", SOON)["deleted"] == []  # not 30 days old yet

        dry = run(data, "--dry-run", "--as-of", LATER)
        assert sorted(dry["deleted"]) == sorted(f"Observation/{i}" for i in expired)
        assert [line.split()[0] for line in dry["held"]] == [f"Observation/{held[0]}"]
        text = retention(data, "run", "--dry-run", "--as-of", LATER)
        assert f"would delete Observation/{expired[0]}" in text and "legal hold Flag/" in text
        for id in expired:  # a dry run changed nothing
            assert client.get(f"{BASE}/Observation/{id}").status_code == 200

        done = run(data, "--as-of", LATER)
        assert done["counts"] == {"deleted": 3, "held": 1, "changed": 0}
        for id in expired:
            assert client.get(f"{BASE}/Observation/{id}").status_code == 410
        assert client.get(f"{BASE}/Observation/{held[0]}").status_code == 200
        assert client.get(f"{BASE}/Condition/{condition}").status_code == 200
        assert run(data, "--as-of", LATER)["counts"]["deleted"] == 0

        assert cli("retention", "set", "AuditEvent", "30", "--data-dir", str(data)).returncode == 2
        assert cli("retention", "set", "Observation", "0", "--data-dir", str(data)).returncode == 2


def test_two_runs_at_once_delete_and_audit_each_resource_once(tmp_path: Path) -> None:
    data = tmp_path / "var"
    with make_client(data) as client:
        expired, _, _ = setup(client, data, 40)
        command = [sys.executable, "-m", "dermbridge", "retention", "run", "--json", "--as-of", LATER,
                   "--data-dir", str(data)]  # fmt: skip
        runs = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=dict(os.environ)) for _ in range(2)]
        reports = [json.loads(p.communicate(timeout=120)[0]) for p in runs]
        assert all(p.returncode == 0 for p in runs)
        deleted = [ref for report in reports for ref in report["deleted"]]
        assert sorted(deleted) == sorted(f"Observation/{i}" for i in expired)  # each once, by one run or the other
        for id in expired[:10]:
            history = client.get(f"{BASE}/Observation/{id}/_history").json()
            assert history["total"] == 2  # created, deleted once
        events = client.get(f"{BASE}/AuditEvent", params={"subtype": "delete", "_count": "200"}).json()
        by_job = [
            e["resource"]["entity"][0]["what"]["reference"]
            for e in events.get("entry", [])
            if e["resource"]["agent"][0]["who"]["display"] == "DermBridge retention job"
        ]
        assert sorted(by_job) == sorted(deleted)
        runs_audited = client.get(f"{BASE}/AuditEvent", params={"subtype": "retention-run"}).json()
        counted = [
            int(d["valueString"])
            for e in runs_audited.get("entry", [])
            for d in e["resource"]["entity"][0]["detail"]
            if d["type"] == "deleted"
        ]
        claimed = [r for r in reports if r["claimed"]]
        assert len(counted) == len(claimed) and sum(counted) == len(expired)
