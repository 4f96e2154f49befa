"""A later visit's results of a lesion are compared with the earlier visit's (inference.lesion_history):
two visits sent with dcmtk's storescu, analysed by the demo model, the second risk result referring to
the first (observation-sequelTo), with the earlier probability and the change in words."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from inference.lesion_history import SEQUEL_TO
from tests.conftest import FhirTestClient
from tests.inference.test_findings import BENIGN, RISK, SUSPICIOUS, image, node  # noqa: F401 (fixture)
from tests.inference.test_worker import consenting_patient, send, wait_for
from tests.schema import assert_r4

pytestmark = pytest.mark.interop
MELANOMA_RISK = f"{RISK}|probability-of-93655004"


def risk_results(client: FhirTestClient, lesion_id: str, count: int) -> list[dict[str, Any]]:
    found = wait_for(client, "Observation", {"focus": f"BodyStructure/{lesion_id}", "code": MELANOMA_RISK}, count)
    return sorted(found, key=lambda o: o["effectiveDateTime"])


def test_a_later_visit_is_compared_with_the_earlier_one(node: FhirTestClient, tmp_path: Path) -> None:  # noqa: F811
    consenting_patient(node, "H-1")
    send(node, tmp_path, image("H-1", BENIGN, accession="V1", study_date="20240105"))
    [lesion] = wait_for(node, "BodyStructure", {})
    [first] = risk_results(node, lesion["id"], 1)
    assert "extension" not in first  # nothing earlier to compare with
    send(node, tmp_path, image("H-1", SUSPICIOUS, accession="V2", study_date="20250110"))
    earlier, later = risk_results(node, lesion["id"], 2)
    assert earlier["id"] == first["id"]
    [sequel] = [e for e in later["extension"] if e["url"] == SEQUEL_TO]
    assert sequel["valueReference"]["reference"] == f"Observation/{first['id']}"
    before = next(c for c in later["component"] if c["code"]["coding"][0]["code"] == "earlier-probability")
    assert before["valueQuantity"]["value"] == first["valueQuantity"]["value"] < 0.5
    assert later["valueQuantity"]["value"] >= 0.5
    note = " ".join(n["text"] for n in later["note"])
    assert (
        "Compared with the earlier visit: Malignant melanoma of skin at 2024-01-05: ≤0.01, Negative; now ≥0.99, "
        "Positive." in note
    )
    assert_r4(later)
    conclusions = " ".join(r.get("conclusion", "") for r in wait_for(node, "DiagnosticReport", {}, 2))
    change = ("Since an earlier visit, Probability of Malignant melanoma of skin on the lesion at Skin structure, "
              "series 1 (Lesion images): ≤0.01, Negative at 2024-01-05; now ≥0.99, Positive.")  # fmt: skip
    assert change in conclusions and f"BodyStructure/{lesion['id']}" not in conclusions  # the site, not an id


def test_images_of_one_visit_are_not_compared_with_each_other(node: FhirTestClient, tmp_path: Path) -> None:  # noqa: F811
    consenting_patient(node, "H-2")
    first = image("H-2", BENIGN, accession="V1", study_date="20240105")
    second = image("H-2", SUSPICIOUS, accession="V1", study_date="20240105", study_uid=first.StudyInstanceUID,
                   series_uid=first.SeriesInstanceUID)  # fmt: skip
    send(node, tmp_path, first)
    [lesion] = wait_for(node, "BodyStructure", {})
    risk_results(node, lesion["id"], 1)
    send(node, tmp_path, second)
    results = risk_results(node, lesion["id"], 2)  # no comparison (their other extension names their DICOM SR)
    assert all(e["url"] != SEQUEL_TO for r in results for e in r.get("extension", []))
