"""The ``dermbridge`` command: serve (real process, real socket, Ctrl-C) and tenant administration."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx2

from tests.server import create_client, fetch_token, running_server


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dermbridge", *args], capture_output=True, text=True, timeout=60)


def test_serve_prints_where_it_listens_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    with running_server(tmp_path / "var") as server:
        assert httpx2.get(f"{server.base}/Patient", headers=server.headers).json()["total"] == 0
    assert server.process.returncode == 0
    assert f"FHIR R4 API on {server.base}" in server.output
    assert (tmp_path / "var" / "tenants" / "default.sqlite").exists()


def test_tenant_create_needs_no_code_change(tmp_path: Path) -> None:
    data = tmp_path / "var"
    created = run_cli("tenant", "create", "clinic-north", "--data-dir", str(data))
    assert created.returncode == 0, created.stderr
    listed = run_cli("tenant", "list", "--data-dir", str(data))
    assert "clinic-north" in listed.stdout.split()
    north_admin = create_client(data, "clinic-north")
    with running_server(data) as server:
        north = server.base.replace("/default", "/clinic-north")
        headers = {"Authorization": f"Bearer {fetch_token(server.root, north_admin)}"}
        patient = {"resourceType": "Patient", "gender": "female"}
        created_patient = httpx2.post(f"{north}/Patient", json=patient, headers=headers)
        assert created_patient.status_code == 201
        assert httpx2.get(f"{server.base}/Patient", headers=server.headers).json()["total"] == 0  # another database
        # a clinic-north token gets nothing of the default tenant, not even a hint that it exists
        assert httpx2.get(f"{server.base}/Patient", headers=headers).status_code == 404


def test_bad_tenant_name_is_refused(tmp_path: Path) -> None:
    refused = run_cli("tenant", "create", "../etc", "--data-dir", str(tmp_path))
    assert refused.returncode == 2
    assert "invalid tenant name" in refused.stderr
