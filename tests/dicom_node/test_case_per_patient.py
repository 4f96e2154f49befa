"""An image joins a case only of its own patient: two patients' studies that carry the same AccessionNumber
(a RIS reusing numbers, a mistyped order at the device) open two cases, never one case holding both
patients' images (``dicom_node.fhir_sync``). Sent with dcmtk's storescu over real DIMSE."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import BASE
from tests.dicom_factories import dermoscopic, write
from tests.dicom_node.conftest import DicomNode


def test_two_patients_with_one_accession_get_a_case_each(node: DicomNode, tmp_path: Path) -> None:
    for n, mrn in enumerate(("ACC-SHARE-1", "ACC-SHARE-2")):
        ds = dermoscopic(patient_id=mrn, patient_name=f"PATIENT^{n}", accession="ACC-SAME", seed=n + 1)
        sent = node.run("storescu", str(write(ds, tmp_path / f"out{n}")))
        assert sent.returncode == 0, sent.stderr
    bundle = node.client.get(f"{BASE}/DiagnosticReport", params={"identifier": "urn:dermbridge:accession|ACC-SAME"})
    cases = [e["resource"] for e in bundle.json().get("entry", [])]
    assert len(cases) == 2
    subjects = {case["subject"]["reference"] for case in cases}
    assert len(subjects) == 2  # each case names its own patient
    for case in cases:
        assert len(case["imagingStudy"]) == 1 and len(case["media"]) == 1  # and holds only that patient's image
