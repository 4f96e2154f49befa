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


def test_first_start_prints_an_admin_client_once_and_auth_is_on(tmp_path: Path) -> None:
    data = tmp_path / "var"
    with running_server(data, admin=False) as first:
        assert httpx2.get(f"{first.base}/Patient").status_code == 401
    assert "client_secret:" in first.output
    client_id = first.output.split("client_id:")[1].split()[0]
    secret = first.output.split("client_secret:")[1].split()[0]
    with running_server(data, admin=False) as second:
        token = fetch_token(second.root, {"client_id": client_id, "client_secret": secret})
        patients = httpx2.get(f"{second.base}/Patient", headers={"Authorization": f"Bearer {token}"})
        assert patients.status_code == 200
    assert "client_secret" not in second.output


def test_operators_manage_clients_and_mint_tokens(tmp_path: Path) -> None:
    data = tmp_path / "var"
    reviewer = create_client(data, "default", "clinician-reviewer")
    listed = run_cli("client", "list", "--data-dir", str(data))
    assert reviewer["client_id"] in listed.stdout and "clinician-reviewer" in listed.stdout
    assert reviewer["client_secret"] not in listed.stdout
    bad_role = run_cli("client", "create", "--role", "superuser", "--data-dir", str(data))
    assert bad_role.returncode == 2
    no_tenant = run_cli("client", "create", "--tenant", "ghost", "--role", "admin", "--data-dir", str(data))
    assert no_tenant.returncode == 2 and "tenant create" in no_tenant.stderr
    with running_server(data) as server:
        port = server.root.rsplit(":", 1)[1]
        minted = run_cli("token", "--client-id", reviewer["client_id"], "--scope", "user/Patient.rs",
                         "--port", port, "--data-dir", str(data))  # fmt: skip
        assert minted.returncode == 0, minted.stderr
        headers = {"Authorization": f"Bearer {minted.stdout.strip()}"}
        assert httpx2.get(f"{server.base}/Patient", headers=headers).status_code == 200
        created = httpx2.post(f"{server.base}/Patient", json={"resourceType": "Patient"}, headers=headers)
        assert created.status_code == 403
        disabled = run_cli("client", "disable", "--client-id", reviewer["client_id"], "--data-dir", str(data))
        assert disabled.returncode == 0
        refused = httpx2.post(
            f"{server.root}/auth/token",
            data={"grant_type": "client_credentials"},
            auth=(reviewer["client_id"], reviewer["client_secret"]),
        )
        assert refused.status_code == 401
