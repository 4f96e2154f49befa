"""Histopathology linked to a lesion as its ground truth: by the histology-of extension (lesion or case) or
by the specimen's body site; the link checked on write; the ground truth following the report and written
by the server only."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import BASE, FhirTestClient, make_client
from tests.fhir_server.outcomes.cohort import MELANOMA, NAEVUS, WHEN, ai_result, pathology, server_write

GROUND_TRUTH = "urn:dermbridge:outcome|histology-ground-truth"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FhirTestClient]:
    with make_client(tmp_path_factory.mktemp("histology") / "var") as c:
        yield c


def post(client: FhirTestClient, resource_type: str, resource: dict[str, Any]) -> str:
    response = client.post(f"{BASE}/{resource_type}", json=resource)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def patient_with_lesions(client: FhirTestClient, count: int = 1) -> tuple[dict[str, str], list[str]]:
    subject = {"reference": f"Patient/{post(client, 'Patient', {'resourceType': 'Patient'})}"}
    site = {"coding": [{"system": "http://snomed.info/sct", "code": "66643007", "display": "Skin of back"}]}
    lesions = [
        post(client, "BodyStructure", {"resourceType": "BodyStructure", "patient": subject, "location": site})
        for _ in range(count)
    ]
    return subject, lesions


def truths(client: FhirTestClient, lesion: str) -> list[dict[str, Any]]:
    found = client.get(f"{BASE}/Observation", params={"code": GROUND_TRUTH, "focus": f"BodyStructure/{lesion}"})
    return [e["resource"] for e in found.json().get("entry", [])]


def linked(client: FhirTestClient, lesion: str, status: str = "final") -> list[dict[str, Any]]:
    """The lesion's ground truth once one has ``status`` (the outbox consumers run meanwhile; bounded)."""
    deadline = time.monotonic() + 30
    while True:
        found = truths(client, lesion)
        if any(t["status"] == status for t in found):
            return found
        assert time.monotonic() < deadline, f"no {status} ground truth of BodyStructure/{lesion}: {found}"
        client.portal.call(client.app.state.dispatcher.drain)  # type: ignore[attr-defined]


def pathologist(client: FhirTestClient) -> str:
    return f"Practitioner/{post(client, 'Practitioner', {'resourceType': 'Practitioner'})}"


def test_a_final_pathology_report_becomes_the_lesions_ground_truth(client: FhirTestClient) -> None:
    subject, (lesion,) = patient_with_lesions(client)
    who = pathologist(client)
    report = post(client, "DiagnosticReport", pathology(subject, f"BodyStructure/{lesion}", MELANOMA, who))
    (truth,) = linked(client, lesion)
    assert truth["status"] == "final"
    assert truth["valueCodeableConcept"]["coding"] == [MELANOMA]
    assert truth["derivedFrom"] == [{"reference": f"DiagnosticReport/{report}"}]
    assert truth["performer"] == [{"reference": who}] and truth["subject"] == subject
    assert truth["method"]["coding"][0]["code"] == "714797009"  # Histologic test
    assert truth["bodySite"]["extension"][0]["valueReference"] == {"reference": f"BodyStructure/{lesion}"}
    subtype = "urn:dermbridge:audit-subtype|histology-ground-truth"
    audited = client.get(f"{BASE}/AuditEvent", params={"subtype": subtype, "entity": f"BodyStructure/{lesion}"})
    assert len(audited.json()["entry"]) == 1  # the server's write is audited, naming the report and the lesion
    # the report amended: the ground truth follows; withdrawn: it is entered-in-error
    amended = client.get(f"{BASE}/DiagnosticReport/{report}").json()
    amended.update(status="amended", conclusionCode=[{"coding": [NAEVUS]}])
    assert client.put(f"{BASE}/DiagnosticReport/{report}", json=amended).status_code == 200
    (truth,) = linked(client, lesion, "amended")
    assert truth["valueCodeableConcept"]["coding"] == [NAEVUS]
    amended["status"] = "entered-in-error"
    assert client.put(f"{BASE}/DiagnosticReport/{report}", json=amended).status_code == 200
    assert [t["status"] for t in linked(client, lesion, "entered-in-error")] == ["entered-in-error"]


def test_a_case_with_one_lesion_and_a_specimens_body_site_link_too(client: FhirTestClient) -> None:
    subject, (lesion,) = patient_with_lesions(client)
    device = post(client, "Device", {"resourceType": "Device"})
    result = server_write(client, ai_result(subject, lesion, device, True, WHEN.isoformat()))
    case = post(
        client,
        "DiagnosticReport",
        {
            "resourceType": "DiagnosticReport",
            "status": "preliminary",
            "code": {"text": "skin lesion case"},
            "subject": subject,
            "result": [{"reference": f"Observation/{result}"}],
        },
    )
    post(client, "DiagnosticReport", pathology(subject, f"DiagnosticReport/{case}", MELANOMA, pathologist(client)))
    assert len(linked(client, lesion)) == 1
    subject, (other,) = patient_with_lesions(client)
    site = {
        "text": "back",
        "extension": [
            {
                "url": "http://hl7.org/fhir/StructureDefinition/bodySite",
                "valueReference": {"reference": f"BodyStructure/{other}"},
            }
        ],
    }
    specimen = post(
        client, "Specimen", {"resourceType": "Specimen", "subject": subject, "collection": {"bodySite": site}}
    )
    report = pathology(subject, "", NAEVUS, pathologist(client))
    report.pop("extension")
    report["specimen"] = [{"reference": f"Specimen/{specimen}"}]
    post(client, "DiagnosticReport", report)
    (truth,) = linked(client, other)
    assert truth["specimen"] == {"reference": f"Specimen/{specimen}"}


def test_links_that_name_no_lesion_of_the_patient_are_refused(client: FhirTestClient) -> None:
    subject, (lesion,) = patient_with_lesions(client)
    _, (theirs,) = patient_with_lesions(client)
    who = pathologist(client)
    refused = client.post(f"{BASE}/DiagnosticReport", json=pathology(subject, f"BodyStructure/{theirs}", MELANOMA, who))
    assert refused.status_code == 422 and "is not a lesion of" in refused.text
    assert refused.json()["issue"][0]["expression"] == ["DiagnosticReport.extension"]
    uncoded = pathology(subject, f"BodyStructure/{lesion}", MELANOMA, who)
    uncoded["conclusionCode"] = [{"text": "melanoma"}]
    refused = client.post(f"{BASE}/DiagnosticReport", json=uncoded)
    assert refused.status_code == 422 and refused.json()["issue"][0]["expression"] == [
        "DiagnosticReport.conclusionCode"
    ]
    subject, lesions = patient_with_lesions(client, 2)
    device = post(client, "Device", {"resourceType": "Device"})
    results = [server_write(client, ai_result(subject, x, device, True, WHEN.isoformat())) for x in lesions]
    case = post(
        client,
        "DiagnosticReport",
        {
            "resourceType": "DiagnosticReport",
            "status": "preliminary",
            "code": {"text": "case"},
            "subject": subject,
            "result": [{"reference": f"Observation/{r}"} for r in results],
        },
    )
    refused = client.post(
        f"{BASE}/DiagnosticReport", json=pathology(subject, f"DiagnosticReport/{case}", MELANOMA, who)
    )
    assert refused.status_code == 422 and "has 2 lesions" in refused.text


def test_only_the_server_writes_ground_truth_and_not_before_the_report_is_final(client: FhirTestClient) -> None:
    subject, (lesion,) = patient_with_lesions(client)
    preliminary = pathology(subject, f"BodyStructure/{lesion}", MELANOMA, pathologist(client))
    preliminary["status"] = "preliminary"
    post(client, "DiagnosticReport", preliminary)
    subject, (later,) = patient_with_lesions(client)  # a later report: once it is linked, the first was handled
    post(client, "DiagnosticReport", pathology(subject, f"BodyStructure/{later}", NAEVUS, pathologist(client)))
    assert len(linked(client, later)) == 1
    assert truths(client, lesion) == []
    forged = {
        "resourceType": "Observation",
        "status": "final",
        "subject": subject,
        "code": {"coding": [{"system": "urn:dermbridge:outcome", "code": "histology-ground-truth"}]},
        "focus": [{"reference": f"BodyStructure/{lesion}"}],
        "valueCodeableConcept": {"coding": [NAEVUS]},
    }
    refused = client.post(f"{BASE}/Observation", json=forged)
    assert refused.status_code == 409, refused.text


def test_a_case_naming_another_patients_lesion_gives_it_no_ground_truth(client: FhirTestClient) -> None:
    """Pentest 3: a case (subject A) whose result is about B's lesion must not link B's lesion through A's report."""
    subject, _ = patient_with_lesions(client)
    _, (theirs,) = patient_with_lesions(client)
    planted = {
        "resourceType": "Observation",
        "status": "final",
        "subject": subject,
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "439401001"}]},
        "focus": [{"reference": f"BodyStructure/{theirs}"}],
    }
    case = {
        "resourceType": "DiagnosticReport",
        "status": "preliminary",
        "code": {"text": "case"},
        "subject": subject,
        "result": [{"reference": f"Observation/{post(client, 'Observation', planted)}"}],
    }
    of = f"DiagnosticReport/{post(client, 'DiagnosticReport', case)}"
    refused = client.post(f"{BASE}/DiagnosticReport", json=pathology(subject, of, MELANOMA, pathologist(client)))
    assert refused.status_code == 422 and "has 0 lesions" in refused.text, refused.text
    assert truths(client, theirs) == []


def test_one_report_for_several_lesions_with_several_diagnoses_is_refused(client: FhirTestClient) -> None:
    """Derm review 3 H1: a report naming lesions A and B with melanoma and naevus gave both melanoma."""
    subject, (first, second) = patient_with_lesions(client, 2)
    report = pathology(subject, f"BodyStructure/{first}", MELANOMA, pathologist(client))
    report["extension"].append(dict(report["extension"][0], valueReference={"reference": f"BodyStructure/{second}"}))
    report["conclusionCode"].append({"coding": [NAEVUS]})
    refused = client.post(f"{BASE}/DiagnosticReport", json=report)
    assert refused.status_code == 422 and "one report per lesion" in refused.text, refused.text
    assert refused.json()["issue"][0]["expression"] == ["DiagnosticReport.conclusionCode"]
    report["conclusionCode"] = [{"coding": [NAEVUS]}]  # both lesions share the one diagnosis: accepted
    post(client, "DiagnosticReport", report)
    for lesion in (first, second):
        assert [t["valueCodeableConcept"]["coding"] for t in linked(client, lesion)] == [[NAEVUS]]
