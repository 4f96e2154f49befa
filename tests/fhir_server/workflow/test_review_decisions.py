"""Issue 14, "Decisions": confirm (a snapshot of the AI findings), override (the reviewer's own, per
lesion), decline to decide; the case final with its interpreter, a Provenance naming the verifier."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import BASE, FhirTestClient, make_client
from tests.fhir_server.security.smart import IdentityProvider
from tests.fhir_server.workflow.review_case import MELANOMA, NAEVUS, ReviewCase, Reviewer


@pytest.fixture
def case(client: FhirTestClient) -> ReviewCase:
    return ReviewCase(client)


def claimed(case: ReviewCase) -> tuple[str, Reviewer]:
    task = case.open()["id"]
    reviewer = case.reviewer("Dr Ada Lovelace")
    assert reviewer.op(task, "claim").status_code == 200
    return task, reviewer


def outputs(task: dict[str, Any], name: str) -> list[Any]:
    return [o for o in task["output"] if o["type"]["text"] == name]


def read(case: ReviewCase, reference: str) -> dict[str, Any]:
    response = case.client.get(f"{BASE}/{reference}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_confirm_snapshots_the_ai_findings_and_signs_the_case_off(case: ReviewCase) -> None:
    task, reviewer = claimed(case)
    done = reviewer.op(task, "complete", ("decision", "confirm"))
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "completed"
    (finding,) = [read(case, o["valueReference"]["reference"]) for o in outputs(done.json(), "finding")]
    assert finding["performer"][0]["reference"] == reviewer.practitioner and "device" not in finding
    assert finding["valueCodeableConcept"] == MELANOMA and finding["focus"] == [
        {"reference": f"BodyStructure/{case.lesion}"}
    ]
    assert finding["derivedFrom"] == [{"reference": f"Observation/{case.ai}/_history/1"}]
    report = read(case, f"DiagnosticReport/{case.case}")
    assert report["status"] == "final" and report["resultsInterpreter"][0]["reference"] == reviewer.practitioner
    ai_results = {f"Observation/{case.ai}", f"Observation/{case.score}"}  # the diagnosis is copied, not the score
    assert {r["reference"] for r in report["result"]} == {*ai_results, f"Observation/{finding['id']}"}
    assert "Awaiting clinician review" not in report["conclusion"]
    provenance = read(case, outputs(done.json(), "provenance")[0]["valueReference"]["reference"])
    assert provenance["agent"][0]["type"]["coding"][0]["code"] == "verifier"
    assert provenance["agent"][0]["who"]["reference"] == reviewer.practitioner
    for used in ai_results:  # every AI result used, at its version
        assert {"role": "source", "what": {"reference": f"{used}/_history/1"}} in provenance["entity"]
    audited = case.client.get(f"{BASE}/AuditEvent?entity=Task/{task}").json()
    operations = [e["resource"] for e in audited["entry"] if e["resource"]["subtype"][0]["code"] == "operation"]
    assert len(operations) == 2  # $claim and $complete, each recorded with its writes
    # the AI result changes later: neither the AI version confirmed nor the clinician's copy change
    ai = read(case, f"Observation/{case.ai}")
    assert (
        case.client.put(f"{BASE}/Observation/{case.ai}", json={**ai, "valueCodeableConcept": NAEVUS}).status_code == 200
    )
    assert read(case, f"Observation/{finding['id']}")["valueCodeableConcept"] == MELANOMA
    assert read(case, f"Observation/{case.ai}/_history/1")["valueCodeableConcept"] == MELANOMA


def test_override_writes_the_reviewers_own_findings_beside_the_ai_ones(case: ReviewCase) -> None:
    task, reviewer = claimed(case)
    finding = [("lesion", {"reference": f"BodyStructure/{case.lesion}"}), ("diagnosis", NAEVUS), ("urgency", "routine")]
    done = reviewer.op(task, "complete", ("decision", "override"), ("finding", finding))
    assert done.status_code == 200, done.text
    (mine,) = [read(case, o["valueReference"]["reference"]) for o in outputs(done.json(), "finding")]
    assert mine["valueCodeableConcept"] == NAEVUS and mine["focus"] == [{"reference": f"BodyStructure/{case.lesion}"}]
    assert (
        mine["code"]["coding"][0]["code"] == "439401001" and mine["performer"][0]["reference"] == reviewer.practitioner
    )
    assert mine["component"][0]["valueCodeableConcept"]["coding"][0]["code"] == "routine"
    report = read(case, f"DiagnosticReport/{case.case}")
    assert report["status"] == "final" and report["conclusionCode"] == [NAEVUS]
    assert read(case, f"Observation/{case.ai}")["valueCodeableConcept"] == MELANOMA  # the AI's stays as it was
    assert f"Observation/{case.ai}" in {r["reference"] for r in report["result"]}


def test_a_case_is_decided_once(case: ReviewCase) -> None:
    task, reviewer = claimed(case)
    assert reviewer.op(task, "complete", ("decision", "confirm")).status_code == 200
    assert reviewer.op(task, "complete", ("decision", "confirm")).status_code == 409
    other_tier = case.open(tier="consultant")["id"]  # a second tier's Task on the signed-off case
    consultant = case.reviewer("Dr B")
    role = case.client.get(f"{BASE}/PractitionerRole?practitioner={consultant.practitioner}").json()["entry"][0][
        "resource"
    ]
    role["code"] = [{"coding": [{"system": "urn:dermbridge:review-tier", "code": "consultant"}]}]
    assert case.client.put(f"{BASE}/PractitionerRole/{role['id']}", json=role).status_code == 200
    assert consultant.op(other_tier, "claim").status_code == 200
    again = consultant.op(other_tier, "complete", ("decision", "confirm"))
    assert again.status_code == 409 and "already signed off" in again.json()["issue"][0]["diagnostics"]


def test_declining_to_decide_keeps_the_case_open_with_the_reason(case: ReviewCase) -> None:
    task, reviewer = claimed(case)
    assert reviewer.op(task, "complete", ("decision", "decline-to-decide")).status_code == 400
    done = reviewer.op(task, "complete", ("decision", "decline-to-decide"), ("reason", "needs a face-to-face exam"))
    assert done.status_code == 200 and outputs(done.json(), "reason")[0]["valueString"] == "needs a face-to-face exam"
    assert read(case, f"DiagnosticReport/{case.case}")["status"] == "preliminary"


def test_bad_decisions_are_refused_before_anything_is_written(case: ReviewCase) -> None:
    task, reviewer = claimed(case)
    assert reviewer.op(task, "complete", ("decision", "maybe")).status_code == 400
    other = case.post("BodyStructure", {"resourceType": "BodyStructure", "patient": {"reference": "Patient/nobody"}})
    wrong = [("lesion", {"reference": f"BodyStructure/{other}"}), ("diagnosis", NAEVUS)]
    assert reviewer.op(task, "complete", ("decision", "override"), ("finding", wrong)).status_code == 422
    assert read(case, f"Task/{task}")["status"] == "in-progress"
    assert read(case, f"DiagnosticReport/{case.case}")["status"] == "preliminary"


def test_a_patient_token_cannot_claim_an_external_user_token_can(tmp_path: Any) -> None:
    idp = IdentityProvider(tmp_path)
    with make_client(tmp_path / "var", **idp.settings) as client:
        case = ReviewCase(client)
        task = case.open()["id"]
        headers = idp.headers("patient/*.cruds", patient=case.patient)
        refused = client.post(f"{BASE}/Task/{task}/$claim", json={"resourceType": "Parameters"}, headers=headers)
        assert refused.status_code == 403
        practitioner = case.reviewer("Dr External").practitioner  # an EHR's user token names its fhirUser
        user = idp.headers("user/Task.cruds user/*.rs", fhir_user=f"https://ehr.example/fhir/{practitioner}")
        claimed = client.post(f"{BASE}/Task/{task}/$claim", json={"resourceType": "Parameters"}, headers=user)
        assert claimed.status_code == 200 and claimed.json()["owner"]["reference"] == practitioner


def test_a_demonstration_models_output_cannot_be_confirmed(case: ReviewCase) -> None:
    """Confirming it would sign a final report asserting a diagnosis the model cannot make (derm review 3, H2)."""
    ai = case.client.get(f"{BASE}/Observation/{case.ai}").json()
    ai["meta"] = {"tag": [{"system": "urn:dermbridge:ai-use", "code": "demonstration"}]}
    assert case.client.put(f"{BASE}/Observation/{case.ai}", json=ai).status_code == 200
    task, reviewer = claimed(case)
    refused = reviewer.op(task, "complete", ("decision", "confirm"))
    assert refused.status_code == 422, refused.text
    assert "demonstration model" in refused.json()["issue"][0]["diagnostics"]
    report = case.client.get(f"{BASE}/DiagnosticReport/{case.case}").json()
    assert report["status"] == "preliminary"  # nothing was signed
    finding = [("lesion", {"reference": f"BodyStructure/{case.lesion}"}),
               ("diagnosis", {"coding": [{"system": "http://snomed.info/sct", "code": "400096001"}]})]  # fmt: skip
    done = reviewer.op(task, "complete", ("decision", "override"), ("finding", finding))
    assert done.status_code == 200, done.text


def test_an_equivocal_ai_result_cannot_be_confirmed(case: ReviewCase) -> None:
    """Equivocal is no diagnosis: confirming it would sign a final report with no plan (derm review 4, H1)."""
    ai = case.client.get(f"{BASE}/Observation/{case.ai}").json()
    equivocal = {"coding": [{"system": "http://snomed.info/sct", "code": "42425007", "display": "Equivocal"}]}
    assert (
        case.client.put(f"{BASE}/Observation/{case.ai}", json={**ai, "valueCodeableConcept": equivocal}).status_code
        == 200
    )
    task, reviewer = claimed(case)
    refused = reviewer.op(task, "complete", ("decision", "confirm"))
    assert refused.status_code == 422, refused.text
    outcome = refused.json()
    assert outcome["resourceType"] == "OperationOutcome" and "equivocal" in outcome["issue"][0]["diagnostics"]
    assert "override" in outcome["issue"][0]["diagnostics"]
    assert case.client.get(f"{BASE}/DiagnosticReport/{case.case}").json()["status"] == "preliminary"
