"""``dermbridge workflow`` in a real subprocess against the SQLite files a running app uses (issue 14): a
definition imported and activated by the CLI applies to the running server's next request, no restart."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import BASE, make_client
from tests.server import cli

TAG = {"system": "urn:dermbridge:product", "code": "non-cancer"}


def workflow(data: Path, *args: str, ok: bool = True) -> str:
    done = cli("workflow", *args, "--data-dir", str(data))
    assert (done.returncode == 0) == ok, done.stderr
    return done.stdout if ok else done.stderr


def test_import_activate_list_and_retire_apply_to_a_running_server(tmp_path: Path) -> None:
    data = tmp_path / "var"
    with make_client(data) as client:
        patient = client.post(f"{BASE}/Patient", json={"resourceType": "Patient"}).json()["id"]
        case = {"resourceType": "DiagnosticReport", "status": "registered", "meta": {"tag": [TAG]},
                "code": {"text": "Skin rash"}, "subject": {"reference": f"Patient/{patient}"}}  # fmt: skip
        assert client.post(f"{BASE}/DiagnosticReport", json=case).status_code == 422
        definition = json.loads(workflow(data, "show", "shipped:human-only"))
        definition["useContext"][0]["valueCodeableConcept"]["coding"] = [TAG]
        (tmp_path / "rash.json").write_text(json.dumps(definition))
        imported = workflow(data, "import", str(tmp_path / "rash.json"))
        plan_id = imported.split("PlanDefinition/")[1].split()[0]
        assert client.get(f"{BASE}/PlanDefinition/{plan_id}").json()["status"] == "draft"
        assert "active" in workflow(data, "activate", plan_id)
        assert client.post(f"{BASE}/DiagnosticReport", json=case).status_code == 201  # the running app sees it
        listed = workflow(data, "list").splitlines()
        assert (
            f"PlanDefinition/{plan_id}\turn:dermbridge:workflow:human-only|1\tnon-cancer\tactive\tHuman only" in listed
        )
        assert any(line.startswith("shipped:ai-only\t") for line in listed)
        workflow(data, "retire", plan_id)
        assert client.post(f"{BASE}/DiagnosticReport", json=case).status_code == 422
        assert "no shipped definition" in workflow(data, "import", "shipped:teleport", ok=False)
