"""The model card's contraindications, enforced (derm review 1, finding 1): a child's image and a clinical
overview photograph are refused with a coded reason, never scored; sent with dcmtk's storescu."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset

from dicom_node.sop_classes import VL_PHOTOGRAPHIC
from inference.accepted_inputs import AcceptedInputs
from inference.contraindications import age_at_acquisition, age_problem, kind_problem
from inference.demo import ACCEPTS
from inference.synthetic import lesion_image, random_spec
from inference.synthetic_scenes import Drawing, painted_lesion
from tests.conftest import BASE, FhirTestClient
from tests.dicom_factories import dermoscopic, with_pixels
from tests.fhir_server.test_consent import AI, consent
from tests.inference.test_worker import lesion_instance, node, send, wait_for

pytestmark = pytest.mark.interop
__all__ = ["node"]


def patient(client: FhirTestClient, mrn: str, born: str | None) -> str:
    body = {"resourceType": "Patient", "identifier": [{"system": "urn:clinic:mrn", "value": mrn}]}
    if born:
        body["birthDate"] = born
    patient_id = str(client.post(f"{BASE}/Patient", json=body).json()["id"])
    permit = consent(patient_id, {"type": "permit", "purpose": [AI]})
    assert client.post(f"{BASE}/Consent", json=permit).status_code == 201
    return patient_id


UNSUITABLE = "urn:dermbridge:image-admission|unsuitable-image"


def refusal(client: FhirTestClient, patient_id: str) -> dict:
    tasks = wait_for(client, "Task", {"patient": f"Patient/{patient_id}", "business-status": UNSUITABLE})
    assert len(tasks) == 1  # one Task per refused image (the review itself is the workflow's, per case)
    return tasks[0]


def scores(client: FhirTestClient, patient_id: str) -> int:
    return int(client.get(f"{BASE}/Observation", params={"subject": f"Patient/{patient_id}"}).json()["total"])


def overview_photograph(mrn: str) -> Dataset:
    """A VL Photographic (XC) picture of a lesion on a body area: skin to the corners, no dermatoscope."""
    pixels, _ = painted_lesion(Drawing(radius=30.0, vignette=False))
    return with_pixels(dermoscopic(patient_id=mrn, sop_class=VL_PHOTOGRAPHIC), pixels)


def test_a_child_is_refused_by_age_at_acquisition(node: FhirTestClient, tmp_path: Path) -> None:
    child = patient(node, "C-1", "2015-06-01")
    ds = lesion_instance("C-1", seed=13, study_date="20261101")  # the lesion the demo model calls melanoma
    ds.PatientBirthDate = "20150601"
    send(node, tmp_path, ds)
    task = refusal(node, child)
    assert {c["code"] for c in task["statusReason"]["coding"]} == {"patient-age"}
    assert "11 y at acquisition, model contraindicated under 18 years" in task["statusReason"]["text"]
    assert task["businessStatus"]["coding"][0]["code"] == "unsuitable-image"
    assert scores(node, child) == 0


def test_a_clinical_overview_photograph_is_not_dermoscopy(node: FhirTestClient, tmp_path: Path) -> None:
    adult = patient(node, "O-1", "1970-05-02")
    send(node, tmp_path, overview_photograph("O-1"))
    task = refusal(node, adult)
    assert {c["code"] for c in task["statusReason"]["coding"]} == {"not-dermoscopy"}
    assert "without a dermatoscope's field of view" in task["statusReason"]["text"]
    assert scores(node, adult) == 0


def test_an_xc_image_through_a_dermatoscope_is_scored(node: FhirTestClient, tmp_path: Path) -> None:
    adult = patient(node, "O-2", "1970-05-02")
    ds = lesion_instance("O-2", seed=13, sop_class=VL_PHOTOGRAPHIC)  # an older dermatoscope: XC, round field
    send(node, tmp_path, ds)
    assert wait_for(node, "Observation", {"subject": f"Patient/{adult}"}, 2)


def image(**attributes: str) -> Dataset:
    ds = Dataset()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def test_age_sources_in_order() -> None:
    scan = image(StudyDate="20261130", PatientBirthDate="19700502", PatientAge="010Y")
    assert age_at_acquisition(scan, "2010-12-01") == 15  # the matched Patient's birth date first
    assert age_at_acquisition(scan, None) == 56  # then the image's birth date
    assert age_at_acquisition(image(PatientAge="006M"), None) == 0.5  # then PatientAge (PS3.5 AS)
    assert "unknown" in str(age_problem(image(), ACCEPTS, None))  # an unknown age is not assumed adult
    assert age_problem(image(), AcceptedInputs(), None) is None  # a card without a minimum age


def test_dermoscopic_photography_is_dermoscopy_by_its_iod() -> None:
    pixels, _ = painted_lesion(Drawing(vignette=False))
    assert kind_problem(dermoscopic(), pixels, ACCEPTS) is None  # DMS: a close-up through a dermatoscope
    assert kind_problem(dermoscopic(sop_class=VL_PHOTOGRAPHIC), pixels, ACCEPTS) is not None
    framed = lesion_image(random_spec(np.random.default_rng(3), 256, False), 256, seed=3)
    assert kind_problem(dermoscopic(sop_class=VL_PHOTOGRAPHIC), framed, ACCEPTS) is None
