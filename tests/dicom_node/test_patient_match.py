"""Patient matching: an image finds the EHR's Patient through the tenant's IssuerOfPatientID
mapping (set by the CLI or the API on a running server), and demographics that contradict the
record are flagged, never merged. Images are sent with dcmtk's storescu over real DIMSE."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pydicom
import pydicom.config
from pydicom.dataset import Dataset

from dicom_node.patient_match import _qualified_system, birth_date, differences, image_name, issuer_urn
from tests.conftest import BASE
from tests.dicom_factories import dermoscopic, write
from tests.dicom_node.conftest import DicomNode
from tests.server import cli

EHR_PATIENT = {
    "resourceType": "Patient",
    "identifier": [{"system": "urn:clinic:mrn", "value": "D-1001"}],
    "name": [{"family": "Lesion", "given": ["Lara"]}],
    "gender": "female",
    "birthDate": "1985-07-14",
}


def clinic_image(*, name: str = "LESION^LARA", born: str = "19850714", sex: str = "F", **kw: Any) -> pydicom.Dataset:
    ds = dermoscopic(patient_id="D-1001", patient_name=name, **kw)
    ds.IssuerOfPatientID = "CLINIC-MRN"
    ds.PatientBirthDate, ds.PatientSex = born, sex
    return ds


def parameters(**values: str) -> dict[str, Any]:
    kinds = {"issuer": "valueString", "system": "valueUri"}
    return {"resourceType": "Parameters", "parameter": [{"name": k, kinds[k]: v} for k, v in values.items()]}


def send(node: DicomNode, tmp_path: Path, ds: pydicom.Dataset) -> None:
    result = node.run("storescu", str(write(ds, tmp_path / "out")))
    assert result.returncode == 0, result.stderr


def patients(node: DicomNode, identifier: str) -> list[dict[str, Any]]:
    bundle = node.client.get(f"{BASE}/Patient", params={"identifier": identifier}).json()
    return [e["resource"] for e in bundle.get("entry", [])]


def study_subject(node: DicomNode, ds: pydicom.Dataset) -> str:
    identifier = f"urn:dicom:uid|urn:oid:{ds.StudyInstanceUID}"
    bundle = node.client.get(f"{BASE}/ImagingStudy", params={"identifier": identifier})
    return str(bundle.json()["entry"][0]["resource"]["subject"]["reference"])


def test_issuer_mapping_set_by_the_cli_finds_the_ehr_patient_without_a_restart(node: DicomNode, tmp_path: Path) -> None:
    ehr = node.client.post(f"{BASE}/Patient", json=EHR_PATIENT).json()
    before = clinic_image(seed=1, accession="ACC-M1")
    send(node, tmp_path, before)
    # unmapped, the plain issuer name is a system of its own: the defect the mapping mends
    assert study_subject(node, before) != f"Patient/{ehr['id']}"
    assert len(patients(node, "urn:dermbridge:issuer:CLINIC-MRN|D-1001")) == 1

    mapped = cli("issuer", "set", "CLINIC-MRN", "urn:clinic:mrn", "--data-dir", str(node.data_dir))
    assert mapped.returncode == 0, mapped.stderr
    assert "CLINIC-MRN -> urn:clinic:mrn" in mapped.stdout
    after = clinic_image(seed=2, accession="ACC-M2")
    send(node, tmp_path, after)  # the same running server, no restart
    assert study_subject(node, after) == f"Patient/{ehr['id']}"
    assert len(patients(node, "urn:clinic:mrn|D-1001")) == 1  # no second Patient
    tasks = node.client.get(f"{BASE}/Task", params={"code": "urn:dermbridge:task|patient-identity-review"}).json()
    assert tasks["total"] == 0  # the same person: nothing to review
    audit = node.client.get(f"{BASE}/AuditEvent", params={"subtype": "110131"}).json()  # Software Configuration
    assert audit["total"] == 1 and "CLINIC-MRN -> urn:clinic:mrn" in audit["entry"][0]["resource"]["outcomeDesc"]
    listed = cli("issuer", "list", "--data-dir", str(node.data_dir))
    assert listed.stdout.strip() == "CLINIC-MRN -> urn:clinic:mrn"
    removed = cli("issuer", "remove", "CLINIC-MRN", "--data-dir", str(node.data_dir))
    assert removed.returncode == 0 and removed.stdout.strip() == "(none)"
    bad = cli("issuer", "set", "CLINIC-MRN", "not a uri", "--data-dir", str(node.data_dir))
    assert bad.returncode == 2 and "not an identifier system" in bad.stderr


def test_demographics_mismatch_is_flagged_never_merged(node: DicomNode, tmp_path: Path) -> None:
    ehr = node.client.post(f"{BASE}/Patient", json=EHR_PATIENT).json()
    mapping = parameters(issuer="CLINIC-MRN", system="urn:clinic:mrn")
    assert node.client.post(f"{BASE}/$issuer-systems", json=mapping).status_code == 200
    first = clinic_image(name="MUSTER^ANNA", born="19700502", seed=3)
    send(node, tmp_path, first)
    second = clinic_image(name="MUSTER^ANNA", born="19700502", seed=4, study_uid=first.StudyInstanceUID)
    send(node, tmp_path, second)
    assert study_subject(node, first) == f"Patient/{ehr['id']}"  # the identifier decides ...
    record = node.client.get(f"{BASE}/Patient/{ehr['id']}").json()
    assert record["name"] == EHR_PATIENT["name"] and record["birthDate"] == "1985-07-14"  # ... nothing overwritten
    review = {"patient": f"Patient/{ehr['id']}", "code": "urn:dermbridge:task|patient-identity-review"}
    tasks = node.client.get(f"{BASE}/Task", params=review).json()
    assert tasks["total"] == 1  # one per study
    task = tasks["entry"][0]["resource"]
    assert task["status"] == "requested" and task["focus"]["reference"] == f"Patient/{ehr['id']}"
    description = task["description"]
    assert "urn:clinic:mrn|D-1001" in description and first.StudyInstanceUID in description
    assert "name: image 'ANNA MUSTER', record 'Lara Lesion'" in description
    assert "birth date: image 1970-05-02, record 1985-07-14" in description
    assert "sex" not in description


def test_identifiers_with_search_delimiters_still_match(node: DicomNode, tmp_path: Path) -> None:
    awkward = {**EHR_PATIENT, "identifier": [{"system": "urn:clinic:mrn", "value": "D,10|01$"}]}
    ehr = node.client.post(f"{BASE}/Patient", json=awkward).json()
    ds = dermoscopic(patient_id="D,10|01$", patient_name="LESION^LARA", seed=5)
    ds.PatientBirthDate = "19850714"
    send(node, tmp_path, ds)
    assert study_subject(node, ds) == f"Patient/{ehr['id']}"


def test_issuer_mapping_api_needs_an_admin_and_a_uri(node: DicomNode) -> None:
    client = node.client
    clinician = {"Authorization": f"Bearer {client.token(roles=('clinician-reviewer',))}"}
    change = parameters(issuer="CLINIC-MRN", system="urn:clinic:mrn")
    assert client.post(f"{BASE}/$issuer-systems", json=change, headers=clinician).status_code == 403
    listed = client.post(f"{BASE}/$issuer-systems", json={"resourceType": "Parameters"}, headers=clinician)
    assert listed.status_code == 200 and "parameter" not in listed.json()
    assert client.post(f"{BASE}/$issuer-systems", json=change).status_code == 200
    mapping = client.post(f"{BASE}/$issuer-systems", json={"resourceType": "Parameters"}).json()["parameter"]
    assert mapping == [{"name": "mapping", "part": [{"name": "issuer", "valueString": "CLINIC-MRN"},
                                                    {"name": "system", "valueUri": "urn:clinic:mrn"}]}]  # fmt: skip
    wrong = parameters(issuer="X", system="clinic mrn")
    refused = client.post(f"{BASE}/$issuer-systems", json=wrong)
    assert refused.status_code == 400 and refused.json()["issue"][0]["expression"] == ["system"]
    assert client.get(f"{BASE}/$issuer-systems").status_code == 405


def test_dicom_names_dates_and_issuers_read_with_pydicom() -> None:
    ds = Dataset()
    ds.PatientName = "Müller^Anna^Maria^Dr.^PhD=ミュラー^アンナ"
    ds.PatientBirthDate = "19850714"
    representation = "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation"
    assert image_name(ds) == [
        {"text": "Dr. Anna Maria Müller PhD", "family": "Müller", "given": ["Anna", "Maria"], "prefix": ["Dr."],
         "suffix": ["PhD"], "extension": [{"url": representation, "valueCode": "ABC"}]},
        {"text": "ミュラー アンナ", "family": "ミュラー", "given": ["アンナ"],
         "extension": [{"url": representation, "valueCode": "IDE"}]},
    ]  # fmt: skip
    assert birth_date(ds) == "1985-07-14"
    with pydicom.config.disable_value_validation(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # pydicom warns of the invalid DA whatever its settings
        ds.PatientBirthDate = "1985"  # as some devices send it
        assert birth_date(ds) is None  # not a DA: left out rather than guessed
    ds.PatientName, ds.PatientSex = "MULLER^ANNA", "M"
    record = {"name": [{"family": "Müller", "given": ["Anna"]}], "gender": "female", "birthDate": "1985-07"}
    ds.PatientBirthDate = "19850714"
    assert differences(ds, record) == ["sex: image male, record female"]  # accents and case are not a mismatch
    assert issuer_urn("CLINIC MRN") == "urn:dermbridge:issuer:CLINIC%20MRN"
    assert issuer_urn("urn:oid:1.2.3") == "urn:oid:1.2.3"
    qualifier = Dataset()
    qualifier.UniversalEntityID, qualifier.UniversalEntityIDType = "1.2.840.99", "ISO"
    ds.IssuerOfPatientIDQualifiersSequence = [qualifier]
    assert _qualified_system(ds) == "urn:oid:1.2.840.99"
