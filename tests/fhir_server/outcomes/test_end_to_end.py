"""End to end with the real pieces: pynetdicom C-STOREs a suspicious dermoscopic image, the inference worker
writes the demonstration model's findings on the lesion, a pathology report names the lesion, and
``$ai-performance`` counts the model's call against the histology."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fhir_server.outcomes.cohort import MELANOMA, pathology
from tests.fhir_server.workflow.conftest import Node, consenting_patient, lesion_instance, node, wait_for

pytestmark = pytest.mark.interop
__all__ = ["node"]  # the workflow tests' fixture: a server with DIMSE, the workflow engine and a worker
SUSPICIOUS_SEED = 28  # the demo model: melanoma 0.99


def parts(parameter: dict[str, Any]) -> dict[str, Any]:
    return {p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in parameter["part"]}


def test_the_workers_findings_are_judged_by_the_pathology_report(node: Node) -> None:
    patient = consenting_patient(node.client, "OUTCOME-1")
    image = lesion_instance("OUTCOME-1", seed=SUSPICIOUS_SEED, accession="OUTCOME-1")
    image.Manufacturer, image.ManufacturerModelName, image.DeviceSerialNumber = "Acme Optics", "DermScope 5", "SN-77"
    node.store(image)
    node.case(patient)
    assert node.analyse() >= 1
    results = wait_for(node.client, "Observation", {"subject": f"Patient/{patient}", "code:text": "probability"})
    device = results[0]["device"]["reference"]
    lesion = results[0]["focus"][0]["reference"]
    assert lesion.startswith("BodyStructure/")
    pathologist = node.client.post("/fhir/default/Practitioner", json={"resourceType": "Practitioner"}).json()["id"]
    report = pathology({"reference": f"Patient/{patient}"}, lesion, MELANOMA, f"Practitioner/{pathologist}")
    assert node.client.post("/fhir/default/DiagnosticReport", json=report).status_code == 201
    wait_for(node.client, "Observation", {"code": "urn:dermbridge:outcome|histology-ground-truth", "focus": lesion})
    answer = node.get("$ai-performance", model=device, **{"from": "2000-01-01", "minCount": "1"})
    warning = next(p["valueString"] for p in answer["parameter"] if p["name"] == "warning")
    assert warning.startswith("DEMONSTRATION model")
    (figure,) = [
        parts(p) for p in answer["parameter"] if p["name"] == "figure" and parts(p)["stratum"] == "all"
        and parts(p)["test"] == "ai" and parts(p)["reference"] == "histology"
    ]  # fmt: skip
    assert (figure["condition"]["code"], figure["tp"], figure["n"]) == ("melanoma", 1, 1)
    assert figure["sensitivity"] == 1.0
    # the subgroup of the camera the image was taken with, named by ingest from its General Equipment module
    (by_camera,) = [
        parts(p) for p in answer["parameter"] if p["name"] == "figure" and parts(p)["stratum"] == "imaging-device"
        and parts(p)["test"] == "ai" and parts(p)["reference"] == "histology"
        and parts(p)["condition"]["code"] == "melanoma"
    ]  # fmt: skip
    assert (by_camera["stratum-value"], by_camera["tp"]) == ("Acme Optics DermScope 5", 1)
