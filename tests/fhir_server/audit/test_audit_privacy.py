"""What the audit trail and the tenant files keep: no searched-for names or MRNs, files for the
server's user only, and the database where the data directory says even with ``#`` in its path."""

from __future__ import annotations

import base64
import sqlite3
import stat
from pathlib import Path

from tests.conftest import BASE, FhirTestClient, make_client
from tests.factories import patient
from tests.fhir_server.audit.test_audit_trail import audit_events, verify

NAME = "Quxmorphelt"
MRN = "MRN-AUDIT-55817"


def test_search_values_stay_out_of_the_trail(client: FhirTestClient) -> None:
    client.post(f"{BASE}/Patient", json=patient(family=NAME, identifier=[{"system": "urn:mrn", "value": MRN}]))
    for _ in range(2):
        client.get(f"{BASE}/Patient", params={"family:exact": NAME, "identifier": f"urn:mrn|{MRN}"})
    searches = [e for e in audit_events(client) if e["subtype"][0]["code"] == "search-type"]
    queries = [base64.b64decode(e["entity"][0]["query"]).decode() for e in searches]
    assert len(queries) == 2 and queries[0] == queries[1]  # the same search is recognisable
    assert queries[0].startswith("family:exact=hmac:") and "&identifier=hmac:" in queries[0]
    assert NAME not in queries[0] and MRN not in queries[0] and "urn:mrn" not in queries[0]


def test_tenant_files_are_the_servers_users_only(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    with make_client(data_dir) as client:
        client.post(f"{BASE}/Patient", json=patient())
        tenants = data_dir / "tenants"
        files = [p for p in tenants.iterdir() if p.is_file()]
        assert {p.name for p in files} >= {"default.sqlite", "default.sqlite-wal", "default.sqlite-shm",
                                           "default.auditlog", "default.auditlog-wal"}  # fmt: skip
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in files}
        assert set(modes.values()) == {0o600}, modes
        assert stat.S_IMODE(tenants.stat().st_mode) == 0o700


def test_a_data_dir_with_a_hash_in_its_path_opens_its_own_database(tmp_path: Path) -> None:
    data_dir = tmp_path / "clinic #2?a=b%20" / "var"
    with make_client(data_dir) as client:
        created = client.post(f"{BASE}/Patient", json=patient()).json()
        assert client.get(f"{BASE}/Patient/{created['id']}").status_code == 200
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clinic #2?a=b%20"]  # no database beside it
    with sqlite3.connect(data_dir / "tenants" / "default.sqlite") as conn:
        assert conn.execute("SELECT COUNT(*) FROM resource WHERE type = 'Patient'").fetchone()[0] == 1
    report = verify(data_dir)
    assert report.returncode == 0 and " 3 events" in report.stdout, report.stdout + report.stderr
