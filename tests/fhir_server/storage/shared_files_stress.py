"""The suite's risky paths on a tenant's SQLite files, in a loop: run as a process of its own by
``test_shared_files_stress`` (a SIGBUS then fails that test instead of killing pytest).

Each round: writes and searches (the server's reader threads, their ``-shm`` memory-mapped), a
scan of every file on disk (``tests.raw_files``, as the erasure test does), other processes
opening the tenant's files for the first time (as the audit loader and the CLI do) while the
server searches, then an erasure. Exits 0 when every round ran and ``audit verify`` holds.

    python -m tests.fhir_server.storage.shared_files_stress DATA_DIR ROUNDS
"""

from __future__ import annotations

import faulthandler
import subprocess
import sys
from pathlib import Path

from tests.conftest import BASE, FhirTestClient, make_client
from tests.factories import observation, patient
from tests.raw_files import raw_bytes

OPENERS = 4  # processes opening the tenant's files per round
_OPEN = """
import sqlite3, sys
for name in ("default.sqlite", "default.auditlog"):
    conn = sqlite3.connect(f"file:{sys.argv[1]}/{name}?mode=ro", uri=True, timeout=30)
    conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    conn.close()
"""


def _searches(client: FhirTestClient, family: str) -> None:
    for params in ({"family": family}, {"_count": "50"}, {"gender": "female", "_sort": "-_lastUpdated"}):
        assert client.get(f"{BASE}/Patient", params=params).status_code == 200
    assert client.get(f"{BASE}/AuditEvent", params={"_count": "20"}).status_code == 200  # flushes the trail


def _round(client: FhirTestClient, data_dir: Path, n: int) -> None:
    family = f"Stress{n}"
    created = client.post(f"{BASE}/Patient", json=patient(family=family)).json()
    client.post(f"{BASE}/Observation", json=observation(f"Patient/{created['id']}"))
    raw_bytes(data_dir)
    tenants = str(data_dir / "tenants")
    openers = [subprocess.Popen([sys.executable, "-c", _OPEN, tenants]) for _ in range(OPENERS)]
    while any(opener.poll() is None for opener in openers):
        _searches(client, family)
    assert all(opener.returncode == 0 for opener in openers)
    assert client.post(f"{BASE}/Patient/{created['id']}/$erase").status_code == 200
    _searches(client, family)


def main(data_dir: Path, rounds: int) -> int:
    faulthandler.enable()
    with make_client(data_dir, audit_loader="process") as client:
        for n in range(rounds):
            _round(client, data_dir, n)
    command = [sys.executable, "-m", "dermbridge", "audit", "verify", "--data-dir", str(data_dir)]
    verified = subprocess.run(command, capture_output=True, text=True, timeout=120)
    sys.stdout.write(verified.stdout)
    return verified.returncode


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), int(sys.argv[2])))
