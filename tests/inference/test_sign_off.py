"""Who signs a report off (derm review 1, finding 5): a client cannot make an AI's report final,
amended or corrected without a clinician in ``resultsInterpreter``, and a late image's note says who
wrote the conclusion it does not change. Real app, images sent with dcmtk's storescu."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BASE, FhirTestClient
from tests.inference.test_worker import consenting_patient, lesion_instance, node, practitioner, send, wait_for

pytestmark = pytest.mark.interop
__all__ = ["node"]


def preliminary(client: FhirTestClient, tmp_path: Path, mrn: str) -> tuple[dict[str, Any], Any]:
    patient_id = consenting_patient(client, mrn)
    first = lesion_instance(mrn, seed=15, suspicious=False)
    send(client, tmp_path, first)
    report = wait_for(client, "DiagnosticReport", {"subject": f"Patient/{patient_id}", "status": "preliminary"})[0]
    return {k: v for k, v in report.items() if k != "meta"}, first


@pytest.mark.parametrize("status", ["final", "amended", "corrected"])
def test_no_sign_off_without_a_clinician(node: FhirTestClient, tmp_path: Path, status: str) -> None:
    report, _ = preliminary(node, tmp_path, f"S-{status}")
    refused = node.put(f"{BASE}/DiagnosticReport/{report['id']}", json={**report, "status": status})
    assert refused.status_code == 422
    outcome = refused.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "resultsInterpreter" in outcome["issue"][0]["diagnostics"]
    device = {**report, "status": status, "resultsInterpreter": [{"reference": "Organization/x"}]}
    assert node.put(f"{BASE}/DiagnosticReport/{report['id']}", json=device).status_code == 422
    assert node.get(f"{BASE}/DiagnosticReport/{report['id']}").json()["status"] == "preliminary"


def test_a_late_note_names_who_wrote_the_conclusion(node: FhirTestClient, tmp_path: Path) -> None:
    report, first = preliminary(node, tmp_path, "S-late")
    signer = [{"reference": f"Practitioner/{practitioner(node)}"}]
    signed = {**report, "status": "final", "resultsInterpreter": signer}  # the AI's words kept, signed off
    assert node.put(f"{BASE}/DiagnosticReport/{report['id']}", json=signed).status_code == 200
    send(node, tmp_path, lesion_instance("S-late", seed=13, study_uid=first.StudyInstanceUID,
                                         series_uid=first.SeriesInstanceUID))  # fmt: skip
    appended = wait_for(node, "DiagnosticReport", {"_id": report["id"], "status": "appended"})[0]
    notes = [e["valueAnnotation"]["text"] for e in appended["extension"] if e["url"].endswith("DiagnosticReport.note")]
    late = next(n for n in notes if "received after the report was final" in n)
    assert "still the AI's preliminary conclusion" in late and "clinician's" not in late
