"""What a dermatologist reads on a case with several lesions (derm review 1, findings 3, 6, 8, 10, 12,
13, 16): every lesion with the deciding finding named by site, side and series, no bare resource ids,
the count of images without a result kept current when a later image is refused, the report's dates,
laterality on the results, a saliency map that names no disease, and the ABCD rule's own labels.
Real app; images sent with dcmtk's storescu."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from inference.synthetic import lesion_image, random_spec
from inference.synthetic_scenes import blurred
from tests.conftest import BASE, FhirTestClient
from tests.dicom_factories import dermoscopic, with_pixels
from tests.inference.test_findings import report_with
from tests.inference.test_worker import SALIENCY, consenting_patient, lesion_instance, node, send, wait_for

pytestmark = pytest.mark.interop
__all__ = ["node"]
ABCD = "urn:dermbridge:abcd|abc-partial"
BODY_SITE = "http://hl7.org/fhir/StructureDefinition/bodySite"


def lesion(mrn: str, number: int, seed: int, suspicious: bool, study_uid: str | None = None) -> pydicom.Dataset:
    ds = lesion_instance(mrn, seed=seed, suspicious=suspicious, **({"study_uid": study_uid} if study_uid else {}))
    ds.SeriesNumber, ds.SeriesDescription, ds.ImageLaterality = number, f"Lesion {number}", "R"
    return ds


def test_a_case_of_three_lesions_reads_right(node: FhirTestClient, tmp_path: Path) -> None:
    patient_id = consenting_patient(node, "W-1")
    first = lesion("W-1", 1, 13, True)
    images = [first, lesion("W-1", 2, 13, True, first.StudyInstanceUID), lesion("W-1", 3, 15, False,
                                                                                 first.StudyInstanceUID)]  # fmt: skip
    send(node, tmp_path, *images)
    wait_for(node, "Media", {"subject": f"Patient/{patient_id}", "modality": SALIENCY}, 3)  # both steps, 3 images
    report = report_with(node, patient_id, 3 * 3 + 3)  # per image: 2 risk results, 1 diagnosis; and 3 ABCD results
    conclusion = report["conclusion"]
    assert "on 2 of 3 lesion(s) analysed" in conclusion, conclusion  # both melanoma calls, not only the first
    assert conclusion.count("Skin structure, Right, series") == 2 and "Lesion 1" in conclusion
    assert "Lesion 2" in conclusion and "Lesion 3" not in conclusion
    assert "BodyStructure/" not in conclusion
    assert report["effectiveDateTime"].startswith("2024-01-05")  # when the images were taken
    assert report["issued"] > "2026"

    # a blurred image of the same case, refused after the conclusion was written: the count follows
    spoiled = lesion_image(random_spec(np.random.default_rng(30), 256, True), 256, seed=30)
    late = with_pixels(dermoscopic(patient_id="W-1", study_uid=first.StudyInstanceUID), blurred(spoiled))
    send(node, tmp_path, late)
    wait_for(
        node,
        "Task",
        {
            "patient": f"Patient/{patient_id}",  # the refusal's own record, in the same commit
            "business-status": "urn:dermbridge:image-admission|unsuitable-image",
        },
    )
    recounted = node.get(f"{BASE}/DiagnosticReport/{report['id']}").json()
    assert "1 of 4 image(s) of the case have no AI result" in recounted["conclusion"]

    risks = wait_for(node, "Observation", {"subject": f"Patient/{patient_id}", "code": "urn:dermbridge:ai-risk|"
                                           "probability-of-93655004"}, 3)  # fmt: skip
    for risk in risks:  # laterality on the result, and the lesion it sits on
        assert "Right" in risk["bodySite"]["text"]
        assert risk["bodySite"]["extension"] == [{"url": BODY_SITE, "valueReference": risk["focus"][0]}]
    maps = wait_for(node, "Media", {"subject": f"Patient/{patient_id}", "modality": SALIENCY}, 3)
    assert all("coding" not in m["reasonCode"][0] for m in maps)  # a demonstration writes no disease code
    assert all("Right" in m["bodySite"]["text"] for m in maps)


def test_the_abcd_result_is_the_rules_own(node: FhirTestClient, tmp_path: Path) -> None:
    patient_id = consenting_patient(node, "W-2")
    send(node, tmp_path, lesion("W-2", 1, 13, True))
    abcd = wait_for(node, "Observation", {"subject": f"Patient/{patient_id}", "code": ABCD})[0]
    assert abcd["device"]["display"] == "DermBridge dermoscopy ABCD rule (Stolz)"
    rule = node.get(f"{BASE}/{abcd['device']['reference']}").json()
    assert rule["deviceName"][0]["name"] == abcd["device"]["display"]
    assert abcd["code"]["text"].startswith("DEMONSTRATION")  # labelled like the demonstration results beside it
    band = next(c for c in abcd["component"] if c["code"]["coding"][0]["code"] == "tds-band")
    assert "scoring aid" in band["code"]["text"] and "not validated here" in band["code"]["text"]
    words = str(band.get("valueCodeableConcept", {}).get("text", "")).lower()
    assert "melanoma" not in words and "suspicious" not in words and "benign" not in words
    provenance = wait_for(node, "Provenance", {"target": f"Observation/{abcd['id']}"})[0]
    assert provenance["reason"][0]["coding"][0]["code"] == "AIAST"
    assert provenance["policy"][0].startswith("Consent/")
