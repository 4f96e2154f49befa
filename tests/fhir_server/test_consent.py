"""The consent decision service: R4 Consent provisions decide whether a use is permitted."""

from __future__ import annotations

from typing import Any

from tests.conftest import BASE, FhirTestClient
from tests.factories import patient

AI = {"system": "urn:dermbridge:purpose-of-use", "code": "ai-analysis"}
RESEARCH = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HRESCH"}


def consent(patient_id: str, provision: dict[str, Any], date: str = "2025-01-01", status: str = "active") -> dict:
    return {
        "resourceType": "Consent",
        "status": status,
        "scope": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]
        },
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{patient_id}"},
        "dateTime": date,
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
        "provision": provision,
    }


def decide(client: FhirTestClient, patient_id: str, purpose: dict, actor: str | None = None) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"name": "patient", "valueReference": {"reference": f"Patient/{patient_id}"}},
        {"name": "purpose", "valueCoding": purpose},
    ]
    if actor:
        parameters.append({"name": "actor", "valueReference": {"reference": actor}})
    response = client.post(f"{BASE}/Consent/$decide", json={"resourceType": "Parameters", "parameter": parameters})
    assert response.status_code == 200, response.text
    return {
        p["name"]: p.get("valueCode") or p.get("valueString") or p.get("valueReference")
        for p in response.json()["parameter"]
    }


def new_patient(client: FhirTestClient) -> str:
    return str(client.post(f"{BASE}/Patient", json=patient()).json()["id"])


def test_no_consent_means_deny(client: FhirTestClient) -> None:
    pid = new_patient(client)
    result = decide(client, pid, AI)
    assert result["decision"] == "deny"
    assert "consent" not in result


def test_permit_for_a_purpose_only(client: FhirTestClient) -> None:
    pid = new_patient(client)
    created = client.post(f"{BASE}/Consent", json=consent(pid, {"type": "permit", "purpose": [AI]})).json()
    permitted = decide(client, pid, AI)
    assert permitted["decision"] == "permit"
    assert permitted["consent"] == {"reference": f"Consent/{created['id']}"}
    assert decide(client, pid, RESEARCH)["decision"] == "deny"


def test_nested_provisions_are_exceptions(client: FhirTestClient) -> None:
    pid = new_patient(client)
    # deny everything, except AI analysis, except by one named organisation
    provision = {
        "type": "deny",
        "provision": [
            {
                "type": "permit",
                "purpose": [AI],
                "provision": [{"type": "deny", "actor": [{"role": {"text": "recipient"},
                                                          "reference": {"reference": "Organization/vendor"}}]}],
            }
        ],
    }  # fmt: skip
    client.post(f"{BASE}/Consent", json=consent(pid, provision))
    assert decide(client, pid, AI)["decision"] == "permit"
    assert decide(client, pid, AI, actor="Organization/vendor")["decision"] == "deny"
    assert decide(client, pid, RESEARCH)["decision"] == "deny"


def test_latest_consent_wins_and_inactive_or_expired_ones_do_not_count(client: FhirTestClient) -> None:
    pid = new_patient(client)
    client.post(f"{BASE}/Consent", json=consent(pid, {"type": "permit", "purpose": [AI]}, date="2024-01-01"))
    withdrawn = client.post(f"{BASE}/Consent", json=consent(pid, {"type": "deny", "purpose": [AI]}, date="2025-06-01"))
    assert decide(client, pid, AI)["decision"] == "deny"
    body = {**withdrawn.json(), "status": "inactive"}
    client.put(f"{BASE}/Consent/{body['id']}", json=body)
    assert decide(client, pid, AI)["decision"] == "permit"
    expired = {"type": "permit", "purpose": [RESEARCH], "period": {"start": "2020-01-01", "end": "2021-01-01"}}
    client.post(f"{BASE}/Consent", json=consent(pid, expired, date="2026-01-01"))
    assert decide(client, pid, RESEARCH)["decision"] == "deny"


def test_decide_errors_and_get_form(client: FhirTestClient) -> None:
    pid = new_patient(client)
    assert client.post(f"{BASE}/Consent/$decide", json={"resourceType": "Parameters"}).status_code == 400
    assert (
        client.get(f"{BASE}/Consent/$decide", params={"patient": "Patient/none", "purpose": "x|y"}).status_code == 404
    )
    response = client.get(f"{BASE}/Consent/$decide", params={"patient": f"Patient/{pid}", "purpose": "urn:x|y"})
    assert response.status_code == 200
    statement = client.get(f"{BASE}/metadata").json()
    consent_entry = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Consent")
    assert consent_entry["operation"][0]["name"] == "decide"


TREAT = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "TREAT", "display": "treatment"}


def ai_purposes(client: FhirTestClient, *purposes: dict[str, str], reset: bool = False, **headers: str) -> Any:
    parameters: list[dict[str, Any]] = [{"name": "purpose", "valueCoding": p} for p in purposes]
    if reset:
        parameters.append({"name": "reset", "valueBoolean": True})
    body = {"resourceType": "Parameters", **({"parameter": parameters} if parameters else {})}
    return client.post(f"{BASE}/Consent/$ai-purposes", json=body, headers=headers)


def test_a_hospital_consent_for_treatment_permits_ai_analysis_per_the_tenants_mapping(client: FhirTestClient) -> None:
    pid = new_patient(client)
    hospital = consent(pid, {"type": "permit", "purpose": [TREAT]})
    created = client.post(f"{BASE}/Consent", json=hospital).json()
    permitted = decide(client, pid, AI)  # by default TREAT covers the AI analysis (it supports the patient's care)
    assert permitted["decision"] == "permit" and permitted["consent"] == {"reference": f"Consent/{created['id']}"}
    research_only = new_patient(client)
    client.post(f"{BASE}/Consent", json=consent(research_only, {"type": "permit", "purpose": [RESEARCH]}))
    assert decide(client, research_only, AI)["decision"] == "deny"  # research never is care

    clinician = f"Bearer {client.token(roles=('clinician-reviewer',))}"
    assert ai_purposes(client, AI, Authorization=clinician).status_code == 403
    narrowed = ai_purposes(client, AI)  # this tenant wants an explicit AI consent
    assert narrowed.status_code == 200
    assert [p["valueCoding"]["code"] for p in narrowed.json()["parameter"]] == ["ai-analysis"]
    assert decide(client, pid, AI)["decision"] == "deny"
    widened = ai_purposes(client, AI, RESEARCH)
    assert widened.status_code == 200 and decide(client, research_only, AI)["decision"] == "permit"
    restored = ai_purposes(client, reset=True).json()["parameter"]
    assert [p["valueCoding"]["code"] for p in restored] == ["ai-analysis", "TREAT"]
    assert decide(client, pid, AI)["decision"] == "permit"
    assert ai_purposes(client, {"system": "x"}).status_code == 400


def test_a_deny_for_treatment_denies_ai_analysis_too(client: FhirTestClient) -> None:
    pid = new_patient(client)
    client.post(f"{BASE}/Consent", json=consent(pid, {"type": "permit", "purpose": [AI]}, date="2024-01-01"))
    client.post(f"{BASE}/Consent", json=consent(pid, {"type": "deny", "purpose": [TREAT]}, date="2025-06-01"))
    assert decide(client, pid, AI)["decision"] == "deny"
