"""Issue 15, "Profiles": what the server writes for a case claims DermBridge's profiles in ``meta.profile``
and conforms to them. A real pipeline: dcmtk's storescu sends a dermoscopic image, the worker analyses it,
a clinician overrides the AI on review; then every resource of the patient is validated with ``$validate``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fhir_server import declared_profiles as urls
from tests.conftest import BASE, FhirTestClient
from tests.fhir_server.workflow.review_case import DERMATOLOGY, NAEVUS, Reviewer
from tests.inference.test_worker import consenting_patient, lesion_instance, node, send, wait_for

pytestmark = pytest.mark.interop
__all__ = ["node"]
TYPES = ("ImagingStudy", "Media", "BodyStructure", "DiagnosticReport", "Observation", "Device", "Provenance", "Task")


def reviewer(client: FhirTestClient) -> Reviewer:
    practitioner = client.post(
        f"{BASE}/Practitioner", json={"resourceType": "Practitioner", "name": [{"text": "Dr A"}]}
    )
    reference = f"Practitioner/{practitioner.json()['id']}"
    role = {"resourceType": "PractitionerRole", "active": True, "practitioner": {"reference": reference},
            "specialty": [DERMATOLOGY]}  # fmt: skip
    assert client.post(f"{BASE}/PractitionerRole", json=role).status_code == 201
    return Reviewer(client, reference)


def claimed(client: FhirTestClient, patient_id: str) -> list[dict[str, Any]]:
    """Every resource of the patient that claims a profile, from each type the pipeline writes."""
    found = []
    for resource_type in TYPES:
        param = "patient" if resource_type in ("BodyStructure", "Task") else "subject"
        params = {param: f"Patient/{patient_id}"} if resource_type not in ("Device", "Provenance") else {}
        bundle = client.get(f"{BASE}/{resource_type}", params={**params, "_count": "200"}).json()
        found += [e["resource"] for e in bundle.get("entry", []) if e["resource"].get("meta", {}).get("profile")]
    return found


def test_every_resource_of_a_reviewed_case_conforms_to_the_profiles_it_claims(
    node: FhirTestClient, tmp_path: Path
) -> None:
    patient_id = consenting_patient(node, "PROFILED-1")
    send(node, tmp_path, lesion_instance("PROFILED-1", seed=11))
    report = wait_for(node, "DiagnosticReport", {"subject": f"Patient/{patient_id}", "status": "preliminary"})[0]
    task = wait_for(node, "Task", {"focus": f"DiagnosticReport/{report['id']}",
                                   "code": "urn:dermbridge:task|clinician-review"})[0]  # fmt: skip
    lesion = wait_for(node, "BodyStructure", {"patient": f"Patient/{patient_id}"})[0]
    clinician = reviewer(node)
    assert clinician.op(task["id"], "claim").status_code == 200
    finding = [
        ("lesion", {"reference": f"BodyStructure/{lesion['id']}"}),
        ("diagnosis", NAEVUS),
        ("urgency", "routine"),
    ]
    done = clinician.op(task["id"], "complete", ("decision", "override"), ("finding", finding))
    assert done.status_code == 200, done.text

    resources = claimed(node, patient_id)
    claims = {url for r in resources for url in r["meta"]["profile"]}
    expected = {urls.CASE_REPORT, urls.LESION, urls.DERMOSCOPIC_STUDY, urls.DERMOSCOPIC_MEDIA, urls.AI_RISK_RESULT,
                urls.CLINICIAN_FINDING, urls.AI_DEVICE, urls.AI_PROVENANCE, urls.REVIEW_TASK}  # fmt: skip
    assert expected <= claims
    for resource in resources:
        reference = f"{resource['resourceType']}/{resource['id']}"
        outcome = node.get(f"{BASE}/{reference}/$validate").json()
        assert outcome["resourceType"] == "OperationOutcome"
        errors = [i for i in outcome["issue"] if i["severity"] in ("error", "fatal")]
        assert errors == [], (reference, errors)
        for profile in resource["meta"]["profile"]:  # each claim, asked for by name
            named = node.get(f"{BASE}/{reference}/$validate", params={"profile": profile}).json()
            assert [i for i in named["issue"] if i["severity"] == "error"] == [], (reference, profile, named)
