"""What the case view reads from FHIR resources (``fhir_server.reviewer_app.case_view``)."""

from __future__ import annotations

from typing import Any

from fhir_server.reviewer_app.case_view import banner, consent_summary, is_demonstration, lesions

LESION = "BodyStructure/b1"
IMAGE = {"resourceType": "Media", "id": "m1", "content": {"url": "http://host:8080/dicomweb/default/studies/1/series/2/instances/3/rendered"},
         "bodySite": {"text": "Back"}}  # fmt: skip
SALIENCY = {"resourceType": "Media", "id": "s1", "partOf": [{"reference": "Media/m1"}],
            "modality": {"coding": [{"system": "urn:dermbridge:media", "code": "saliency-map"}]},
            "content": {"url": "Binary/png1"}}  # fmt: skip
RISK: dict[str, Any] = {
    "resourceType": "Observation", "id": "o1", "device": {"reference": "Device/d"},
    "meta": {"tag": [{"system": "urn:dermbridge:ai-use", "code": "demonstration"}]},
    "code": {"text": "AI probability of melanoma"}, "focus": [{"reference": LESION}],
    "valueQuantity": {"value": 0.99}, "interpretation": [{"coding": [{"code": "POS", "display": "Positive"}]}],
    "component": [{"code": {"coding": [{"system": "urn:dermbridge:ai-result", "code": "threshold"}]},
                   "valueQuantity": {"value": 0.5}}],
    "derivedFrom": [{"reference": "Media/m1"}, {"reference": "ImagingStudy/i1"}],
}  # fmt: skip
CLINICIAN = {"resourceType": "Observation", "id": "o2", "performer": [{"reference": "Practitioner/p"}],
             "code": {"text": "Diagnosis"}, "focus": [{"reference": LESION}],
             "valueCodeableConcept": {"text": "Melanoma"}}  # fmt: skip


def test_a_lesion_gathers_its_findings_images_and_saliency_map() -> None:
    structures = [{"resourceType": "BodyStructure", "id": "b1", "description": "Mole on the back"}]
    (lesion,) = lesions([CLINICIAN, RISK], [IMAGE, SALIENCY], [SALIENCY], structures)
    assert lesion.label == "Mole on the back"
    assert [(f.by_ai, f.value, f.interpretation, f.threshold) for f in lesion.findings] == [
        (True, "0.99", "Positive", "0.5"),
        (False, "Melanoma", "", ""),
    ]  # the AI's first, the clinician's beside them
    (image,) = lesion.images
    assert image.url == "/dicomweb/default/studies/1/series/2/instances/3/rendered"  # same origin: the path
    assert image.saliency == "/app/binary/png1" and image.site == "Back"
    assert is_demonstration(RISK) and not is_demonstration(CLINICIAN)


def test_images_without_findings_are_still_shown() -> None:
    (lesion,) = lesions([], [IMAGE], [], [])
    assert lesion.label == "Images without findings" and [i.media_id for i in lesion.images] == ["m1"]


def test_the_banner_and_consent_are_minimal() -> None:
    patient = {"name": [{"given": ["Ann"], "family": "Lee"}], "birthDate": "1970-05-02", "gender": "female",
               "identifier": [{"value": "MRN-1"}], "telecom": [{"value": "555"}]}  # fmt: skip
    assert banner(patient) == {"name": "Ann Lee", "born": "1970", "sex": "female", "identifier": "MRN-1"}
    consent = {"status": "active", "provision": {"type": "permit", "purpose": [{"code": "ai", "display": "AI"}]}}
    assert consent_summary([consent]) == "active: permit AI"
    assert consent_summary([]) == "No consent recorded"
