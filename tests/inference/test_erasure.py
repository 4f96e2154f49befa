"""``Patient/$erase`` removes what the AI produced for the patient: the saliency Media and its Binary
(the PNG of the lesion), the lesions (BodyStructure), the findings, the ABCD Observation, the
unsuitable-image Task, their Provenances and index rows; the raw files hold none of the saliency
PNG's bytes afterwards."""

from __future__ import annotations

import base64
import sqlite3
from pathlib import Path

import pytest

from inference.synthetic_scenes import he_tile
from tests.conftest import BASE, make_client
from tests.dicom_factories import dermoscopic, with_pixels
from tests.fhir_server.security.test_encryption import raw_bytes
from tests.inference.test_worker import SALIENCY, consenting_patient, lesion_instance, send, wait_for

pytestmark = pytest.mark.interop


def test_erase_removes_every_ai_output(tmp_path: Path) -> None:
    data = tmp_path / "var"
    with make_client(data, inference_enabled=True, dicom_any_ae_tenant="default") as node:
        patient_id = consenting_patient(node, "ER-1")
        kept = consenting_patient(node, "ER-2")
        first = lesion_instance("ER-1", seed=41)
        unsuitable = with_pixels(dermoscopic(patient_id="ER-1", accession="ACC-ER"), he_tile(256))
        send(node, tmp_path, first, unsuitable, lesion_instance("ER-2", seed=42, accession="ACC-K"))
        findings = wait_for(node, "Observation", {"subject": f"Patient/{patient_id}"}, 3)
        wait_for(node, "Observation", {"subject": f"Patient/{kept}"}, 3)
        task = wait_for(node, "Task", {"patient": f"Patient/{patient_id}", "status": "requested"})[0]
        saliency = wait_for(node, "Media", {"subject": f"Patient/{patient_id}", "modality": SALIENCY})[0]
        link = f"Media/{saliency['id']}"
        url = f"{BASE}/{saliency['content']['url']}"
        png = node.get(url, headers={"Accept": "image/png"}).content
        assert png.startswith(b"\x89PNG")
        provenances = [
            p["id"] for o in findings for p in wait_for(node, "Provenance", {"target": f"Observation/{o['id']}"})
        ]
        other = wait_for(node, "Media", {"subject": f"Patient/{kept}", "modality": SALIENCY})[0]

        erased = node.post(f"{BASE}/Patient/{patient_id}/$erase")
        assert erased.status_code == 200, erased.text

        assert node.get(url, headers={"Accept": "image/png"}).status_code == 410  # it answered 200 with the lesion
        assert node.get(f"{url}/_history/1").status_code == 410
        assert node.get(f"{BASE}/{link}").status_code == 410
        for observation in findings:
            assert node.get(f"{BASE}/Observation/{observation['id']}").status_code == 410
        for provenance in set(provenances):
            assert node.get(f"{BASE}/Provenance/{provenance}").status_code == 410
            assert node.get(f"{BASE}/Provenance/{provenance}/_history/1").status_code == 410
        assert node.get(f"{BASE}/Task/{task['id']}").status_code == 410
        lesions = {o["focus"][0]["reference"] for o in findings}
        assert lesions and all(node.get(f"{BASE}/{lesion}").status_code == 410 for lesion in lesions)
        for observation in findings:
            found = node.get(f"{BASE}/Provenance", params={"target": f"Observation/{observation['id']}"}).json()
            assert found["total"] == 0  # the index rows are gone too
        assert node.get(f"{BASE}/Media", params={"subject": f"Patient/{patient_id}"}).json()["total"] == 0
        other_png = node.get(f"{BASE}/{other['content']['url']}", headers={"Accept": "image/png"})
        assert other_png.status_code == 200  # another patient's map stays

    after = raw_bytes(data)
    encoded = base64.b64encode(png)
    for secret in (png[100:148], png[-48:], encoded[200:264]):
        assert secret not in after
    with sqlite3.connect(data / "tenants" / "default.sqlite") as conn:
        binary_id = saliency["content"]["url"].split("/")[1]
        sealed = conn.execute(
            "SELECT content FROM history WHERE id = ? AND content IS NOT NULL", (binary_id,)
        ).fetchall()
    assert sealed and all(f"Patient/{patient_id}".encode() in row[0][:80] for row in sealed)  # under a shredded key
