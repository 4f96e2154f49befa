"""A tenant's product rules (issue 14): the case DICOM ingest opens is tagged with the product its calling AE
title or one of its attributes names. Rules are set with the real CLI against the running server's files
(no restart); images come from dcmtk's storescu and pynetdicom as SCUs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from dicom_node.case_product import attribute_texts, is_keyword
from fhir_server.errors import OperationOutcomeError
from fhir_server.workflow.product_rules import parse_rules
from tests.dicom_factories import VL_PHOTOGRAPHIC, dermoscopic, write
from tests.dicom_node.conftest import DicomNode
from tests.dicom_scu import c_store
from tests.server import cli

pytestmark = pytest.mark.interop
BASE = "/fhir/default"
PRODUCT = "urn:dermbridge:product"
RULES = {"rules": [
    {"product": "dermoscopy-clinic", "attribute": "SOPClassUID", "value": "1.2.840.10008.5.1.4.1.1.77.1.7"},
    {"product": "gp-photos", "callingAE": "PYNETDICOM", "attribute": "StudyDescription", "value": "rash"},
]}  # fmt: skip


def product_rules(data: Path, *args: str, ok: bool = True) -> str:
    done = cli("workflow", "product-rules", *args, "--data-dir", str(data))
    assert (done.returncode == 0) == ok, done.stderr
    return done.stdout if ok else done.stderr


def store_with_pynetdicom(node: DicomNode, ds: Dataset) -> None:
    c_store(node.port, ds, calling_ae="PYNETDICOM")


def case_of(node: DicomNode, patient_mrn: str) -> dict[str, Any]:
    patient = node.client.get(f"{BASE}/Patient", params={"identifier": f"urn:clinic:mrn|{patient_mrn}"}).json()
    reports = node.client.get(f"{BASE}/DiagnosticReport", params={"subject": patient["entry"][0]["resource"]["id"]})
    return dict(reports.json()["entry"][0]["resource"])


def tags(report: dict[str, Any]) -> list[str]:
    return [t["code"] for t in report.get("meta", {}).get("tag", []) if t["system"] == PRODUCT]


def photograph(mrn: str, description: str) -> Dataset:
    ds = dermoscopic(patient_id=mrn, sop_class=VL_PHOTOGRAPHIC, accession=mrn)
    ds.StudyDescription = description
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def test_the_calling_ae_and_the_sop_class_name_the_product_of_a_new_case(node: DicomNode, tmp_path: Path) -> None:
    (tmp_path / "rules.json").write_text(json.dumps(RULES))
    shown = product_rules(node.data_dir, "set", "--file", str(tmp_path / "rules.json"))
    assert "1. SOPClassUID = 1.2.840.10008.5.1.4.1.1.77.1.7 -> dermoscopy-clinic" in shown
    assert "2. calling AE PYNETDICOM and StudyDescription = rash -> gp-photos" in product_rules(node.data_dir, "show")

    dermoscopy = write(dermoscopic(patient_id="PR-DERM", accession="PR-DERM"), tmp_path)
    assert node.run("storescu", str(dermoscopy)).returncode == 0  # calling AE STORESCU
    assert tags(case_of(node, "PR-DERM")) == ["dermoscopy-clinic"]
    store_with_pynetdicom(node, photograph("PR-GP", "  Rash "))  # case and spaces do not matter
    assert tags(case_of(node, "PR-GP")) == ["gp-photos"]
    store_with_pynetdicom(node, photograph("PR-NONE", "Mole check"))  # the AE matches, the attribute does not
    assert tags(case_of(node, "PR-NONE")) == []  # the tenant's default product
    other = write(photograph("PR-AE", "Rash"), tmp_path)  # the attribute matches, the AE does not
    assert node.run("storescu", str(other)).returncode == 0
    assert tags(case_of(node, "PR-AE")) == []

    product_rules(node.data_dir, "reset")
    store_with_pynetdicom(node, photograph("PR-RESET", "Rash"))
    assert tags(case_of(node, "PR-RESET")) == []


@pytest.mark.parametrize(
    ("rules", "words"),
    [
        ({"rules": [{"product": "Skin Cancer", "callingAE": "CAM"}]}, "rules[0].product"),
        ({"rules": [{"product": "x", "attribute": "StudyDescriptio", "value": "a"}]}, "not a DICOM keyword"),
        ({"rules": [{"product": "x", "attribute": "Modality"}]}, "rules[0].value"),
        ({"rules": [{"product": "x"}]}, "names a callingAE"),
        ({"rules": [{"product": "x", "callingAE": "A" * 17}]}, "AE title of 1 to 16"),
        ({"rules": [{"product": "x", "callingAE": "CAM"}] * 51}, "at most 50"),
        ({"rules": [{"product": "x", "attribute": "PixelData", "value": "1"}]}, "no bulk data"),  # pentest 3, 9
        ({"rules": [{"product": "x", "attribute": "IconImageSequence", "value": "1"}]}, "no bulk data"),
        ({"rules": [{"product": "x", "attribute": "StudyDescription", "value": "Rash\x00"}]}, "no control"),
    ],
)
def test_invalid_rules_are_refused_with_a_422_naming_the_rule(rules: dict[str, Any], words: str) -> None:
    with pytest.raises(OperationOutcomeError) as refused:
        parse_rules(rules, is_keyword)
    assert refused.value.status == 422 and words in str(refused.value.outcome)


def test_the_cli_refuses_invalid_rules_and_keeps_the_rules(node: DicomNode, tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text(json.dumps({"rules": [{"product": "x", "attribute": "Modalty", "value": "XC"}]}))
    assert "not a DICOM keyword" in product_rules(node.data_dir, "set", "--file", str(tmp_path / "bad.json"), ok=False)
    assert "no rules" in product_rules(node.data_dir, "show")


def test_a_code_sequence_is_matched_by_its_code_with_or_without_the_scheme() -> None:
    ds = Dataset()
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "P5-0001", "99CLINIC", "Dermoscopy"
    ds.ProcedureCodeSequence = pydicom.Sequence([item])
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    assert attribute_texts(ds, "ProcedureCodeSequence") == ["P5-0001", "99CLINIC|P5-0001"]
    assert attribute_texts(ds, "ImageType") == ["ORIGINAL", "PRIMARY"]
    assert attribute_texts(ds, "StudyDescription") == []
