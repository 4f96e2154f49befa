"""The retention job on the server's schedule (off in tests unless asked, as here)."""

from __future__ import annotations

import time
from pathlib import Path

from tests.conftest import BASE, make_client


def test_the_server_runs_the_retention_job_on_its_schedule(tmp_path: Path) -> None:
    with make_client(tmp_path / "var", retention_every_hours=0.0002) as client:  # every 0.72 s
        deadline = time.monotonic() + 60
        runs: list[object] = []
        while not runs and time.monotonic() < deadline:  # a condition, bounded: not a sleep for a moment
            found = client.get(f"{BASE}/AuditEvent", params={"subtype": "retention-run"}).json()
            runs = found.get("entry", [])
        assert runs, "no retention run was audited within 60 s"
        detail = runs[0]["resource"]["entity"][0]["detail"]
        assert {"type": "deleted", "valueString": "0"} in detail
