"""Issue 15, "Validation": ``$validate`` over HTTP on the official R4 examples of the profiled types and
on DermBridge's profiles, each rule broken once and reported at the right ``expression``; ``meta.profile``
claims on writes, enforced and refused per tenant."""

from __future__ import annotations

import copy
import dataclasses
import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from fhir_server import declared_profiles as urls
from inference.demo import demo_card
from inference.findings import ImageContext, diagnosis_observation, risk_observation
from inference.model_card import OutputClass
from tests.conftest import BASE, FhirTestClient
from tests.factories import patient, set_enforcement
from tests.fhir_server.test_consent import AI, consent

EXAMPLES: dict[str, dict[str, Any]] = json.loads(
    gzip.decompress((Path(__file__).parents[2] / "data" / "r4-examples.json.gz").read_bytes())
)
# The one official example that breaks R4: Observation.performer may not refer to an Encounter.
KNOWN_BAD = {"Observation-clinical-gender.json": ("Observation.performer[0].reference", "Encounter")}
MELANOMA = OutputClass(1, "93655004", "Malignant melanoma of skin", 0.5, "melanoma")
CARD = dataclasses.replace(demo_card("1"), clinical_use=True)


def risk_result() -> dict[str, Any]:
    """A risk result as the worker writes it (a clinical model, a probability above the threshold)."""
    context = ImageContext("1.2.3", "p1", "m1", "s1", "r1", lesion_id="b1", acquired="2026-11-30T10:00:00Z")
    return risk_observation(context, CARD, "d1", MELANOMA, 0.8, "2026-11-30T12:00:00Z")


def validate(client: FhirTestClient, resource: dict[str, Any], path: str = "", **parts: str) -> list[dict[str, Any]]:
    body = {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": resource}]}
    body["parameter"] += [{"name": k, "valueUri" if k == "profile" else "valueCode": v} for k, v in parts.items()]
    response = client.post(f"{BASE}/{path or resource['resourceType']}/$validate", json=body)
    assert response.status_code == 200, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    return [i for i in outcome["issue"] if i["severity"] in ("error", "fatal")]


def expressions(issues: list[dict[str, Any]]) -> set[str]:
    return {e for i in issues for e in i.get("expression", [])}


def test_the_official_examples_of_the_profiled_types_are_valid(client: FhirTestClient) -> None:
    """Twelve examples claim R4's vital-signs profile, which the server does not hold: a tenant that accepts
    unknown claims gets a warning for each, and no error."""
    assert len(EXAMPLES) > 100
    set_enforcement(client, unknown="accept")
    for name, example in EXAMPLES.items():
        response = client.post(f"{BASE}/{example['resourceType']}/$validate", json=example)  # the bare resource
        errors = [i for i in response.json()["issue"] if i["severity"] == "error"]
        if name in KNOWN_BAD:
            expression, said = KNOWN_BAD[name]
            assert expressions(errors) == {expression} and said in errors[0]["diagnostics"]
        else:
            assert errors == [], (name, errors)


def _variant(resource: dict[str, Any], change: Any) -> dict[str, Any]:
    broken = copy.deepcopy(resource)
    change(broken)
    return broken


OBSERVATION = EXAMPLES["Observation-example.json"]
BASE_RULES = [
    ("obs-6 invariant", lambda o: o.update(dataAbsentReason={"text": "lost"}), "Observation", "obs-6"),
    ("reference target", lambda o: o.update(subject={"reference": "Medication/x"}), "Observation.subject.reference",
     "Medication"),
]  # fmt: skip


@pytest.mark.parametrize(("rule", "change", "expression", "said"), BASE_RULES, ids=[r[0] for r in BASE_RULES])
def test_an_official_example_broken_once_is_reported_where_it_breaks(
    client: FhirTestClient, rule: str, change: Any, expression: str, said: str
) -> None:
    assert validate(client, OBSERVATION) == []
    errors = validate(client, _variant(OBSERVATION, change))
    assert expression in expressions(errors) and any(said in i["diagnostics"] for i in errors), errors


def _coding(o: dict[str, Any], system: str) -> dict[str, Any]:
    return next(c for c in o["code"]["coding"] if c["system"] == system)


PROFILE_RULES = [
    ("cardinality", lambda o: o.pop("device"), "Observation.device", "at least 1"),
    ("choice type", lambda o: o.update(valueString=str(o.pop("valueQuantity"))), "Observation.valueString", "types"),
    ("pattern", lambda o: o.update(method={"text": "by hand"}), "Observation.method", "match"),
    ("pattern of a choice", lambda o: o["valueQuantity"].update(system="urn:other"), "Observation.valueQuantity",
     "match"),
    ("slicing by value", lambda o: _coding(o, "urn:dermbridge:ai-risk").update(system="urn:other"),
     "Observation.code.coding", "slice risk"),
    ("slicing by pattern", lambda o: o["component"].pop(0), "Observation.component", "slice threshold"),
    ("required binding", lambda o: o["interpretation"][0]["coding"][0].update(code="H"),
     "Observation.interpretation[0]", "ai-risk-interpretation"),
    ("invariant", lambda o: o["valueQuantity"].update(value=1.5), "Observation", "dbr-score-1"),
    ("reference target", lambda o: o.update(device={"reference": "Patient/p1"}), "Observation.device.reference",
     "Patient"),
    ("security label", lambda o: o["meta"].pop("security"), "Observation.meta.security", "at least 1"),
]  # fmt: skip


@pytest.mark.parametrize(("rule", "change", "expression", "said"), PROFILE_RULES, ids=[r[0] for r in PROFILE_RULES])
def test_a_risk_result_broken_once_fails_its_profile_where_it_breaks(
    client: FhirTestClient, rule: str, change: Any, expression: str, said: str
) -> None:
    valid = risk_result()
    assert validate(client, valid) == []  # meta.profile claims the profile
    assert validate(client, valid, profile=urls.AI_RISK_RESULT) == []
    errors = validate(client, _variant(valid, change), profile=urls.AI_RISK_RESULT)
    assert expression in expressions(errors) and any(said in i["diagnostics"] for i in errors), errors
    assert urls.AI_RISK_RESULT in errors[0]["diagnostics"]


def review_task() -> dict[str, Any]:
    """A review Task as the review queue writes it."""
    return {
        "resourceType": "Task",
        "meta": {"profile": [urls.REVIEW_TASK]},
        "identifier": [{"system": "urn:dermbridge:review-task", "value": "r1|dermatologist|1"}],
        "status": "requested",
        "businessStatus": {"coding": [{"system": "urn:dermbridge:review-state", "code": "queued"}]},
        "intent": "order",
        "priority": "asap",
        "code": {"coding": [{"system": "urn:dermbridge:task", "code": "clinician-review"},
                            {"system": "urn:dermbridge:review-tier", "code": "dermatologist"}]},
        "focus": {"reference": "DiagnosticReport/r1"},
        "for": {"reference": "Patient/p1"},
        "authoredOn": "2026-11-30T12:00:00Z",
    }  # fmt: skip


def test_a_fixed_value_and_a_closed_set_of_codes_in_a_review_task(client: FhirTestClient) -> None:
    assert validate(client, review_task()) == []
    errors = validate(client, _variant(review_task(), lambda t: t.update(intent="plan")))
    assert expressions(errors) == {"Task.intent"} and "'order'" in errors[0]["diagnostics"]
    no_tier = _variant(review_task(), lambda t: t["code"]["coding"].pop(1))
    errors = validate(client, no_tier)
    assert expressions(errors) == {"Task.code.coding"} and any("slice tier" in i["diagnostics"] for i in errors)


def test_a_profile_the_server_does_not_know_is_an_error(client: FhirTestClient) -> None:
    errors = validate(client, OBSERVATION, profile="https://example.org/StructureDefinition/unknown")
    assert expressions(errors) == {"profile"} and "not known" in errors[0]["diagnostics"]


def ai_consent(client: FhirTestClient) -> dict[str, Any]:
    """A Consent to the AI analysis that claims DermBridge's profile."""
    patient_id = client.post(f"{BASE}/Patient", json=patient()).json()["id"]
    return {**consent(patient_id, {"type": "permit", "purpose": [AI]}), "meta": {"profile": [urls.AI_ANALYSIS_CONSENT]}}


CONSENT_RULES = [
    ("cardinality", lambda c: c.pop("patient"), "Consent.patient", "at least 1"),
    ("invariant", lambda c: c["provision"].pop("purpose"), "Consent", "dbr-consent-1"),
]


def test_modes_at_instance_level(client: FhirTestClient) -> None:
    created = client.post(f"{BASE}/Consent", json=ai_consent(client))
    assert created.status_code == 201, created.text
    stored = created.json()
    path = f"Consent/{stored['id']}"
    ok = client.get(f"{BASE}/{path}/$validate").json()  # the stored resource: the extensible bindings' warnings
    assert {i["severity"] for i in ok["issue"]} == {"warning"}, ok
    assert validate(client, {**stored, "id": "other"}, path, mode="update")[0]["expression"] == ["Consent.id"]
    assert validate(client, stored, path, mode="update") == []
    assert client.get(f"{BASE}/{path}/$validate", params={"mode": "delete"}).json()["issue"][0]["severity"] == (
        "information"
    )
    assert client.get(f"{BASE}/Consent/nothing/$validate", params={"mode": "delete"}).status_code == 404
    assert client.get(f"{BASE}/Consent/$validate", params={"mode": "delete"}).status_code == 400
    assert client.get(f"{BASE}/{path}/$validate", params={"mode": "erase"}).status_code == 400


@pytest.mark.parametrize(("rule", "change", "expression", "said"), CONSENT_RULES, ids=[r[0] for r in CONSENT_RULES])
def test_writes_enforce_the_profiles_they_claim(
    client: FhirTestClient, rule: str, change: Any, expression: str, said: str
) -> None:
    valid = ai_consent(client)
    refused = client.post(f"{BASE}/Consent", json=_variant(valid, change))
    assert refused.status_code in (400, 422)  # 400: the R4 schema refuses it first (a code outside its binding)
    assert expression in expressions(refused.json()["issue"]), refused.json()
    assert said in json.dumps(refused.json())
    assert client.post(f"{BASE}/Consent", json=valid).status_code == 201


def test_unknown_profiles_are_refused_and_enforcement_is_per_tenant(client: FhirTestClient) -> None:
    broken = _variant(ai_consent(client), lambda c: c.pop("patient"))
    unknown = {**OBSERVATION, "meta": {"profile": ["https://example.org/StructureDefinition/unknown"]}}
    refused = client.post(f"{BASE}/Observation", json=unknown)
    assert refused.status_code == 422 and expressions(refused.json()["issue"]) == {"Observation.meta.profile[0]"}
    bundle = {"resourceType": "Bundle", "type": "transaction",
              "entry": [{"resource": broken, "request": {"method": "POST", "url": "Consent"}}]}  # fmt: skip
    assert client.post(BASE, json=bundle).status_code == 422  # the same inside a transaction
    assert set_enforcement(client) == {"known": "enforce", "unknown": "refuse"}  # the default, answered
    assert set_enforcement(client, known="ignore", unknown="accept") == {"known": "ignore", "unknown": "accept"}
    assert client.post(f"{BASE}/Consent", json=broken).status_code == 201
    assert client.post(f"{BASE}/Observation", json=unknown).status_code == 201
    warned = client.post(f"{BASE}/Observation/$validate", json=unknown).json()["issue"]
    assert warned[0]["severity"] == "warning" and "not known" in warned[0]["diagnostics"]
    assert validate(client, broken)[0]["expression"] == ["Consent.patient"]  # $validate checks known claims always
    bad = {"resourceType": "Parameters", "parameter": [{"name": "known", "valueCode": "sometimes"}]}
    assert client.post(f"{BASE}/StructureDefinition/$profile-enforcement", json=bad).status_code == 400


def test_a_patch_that_breaks_a_claimed_profile_is_refused(client: FhirTestClient) -> None:
    stored = client.post(f"{BASE}/Consent", json=ai_consent(client)).json()
    patch = [{"op": "remove", "path": "/patient"}]
    headers = {"Content-Type": "application/json-patch+json"}
    refused = client.patch(f"{BASE}/Consent/{stored['id']}", content=json.dumps(patch), headers=headers)
    assert refused.status_code == 422 and expressions(refused.json()["issue"]) == {"Consent.patient"}
    assert client.get(f"{BASE}/Consent/{stored['id']}").json()["meta"]["versionId"] == "1"


def test_the_ai_transparency_igs_profile_is_recognised_but_not_held(client: FhirTestClient) -> None:
    """DermBridge's AI Device complies with the IG's AI-Device, so a claim of the IG's is not refused; a
    third party's AI Device need not meet DermBridge's stricter profile."""
    ig = "http://hl7.org/fhir/uv/aitransparency/StructureDefinition/AI-Device"
    device = {"resourceType": "Device", "meta": {"profile": [ig]}, "status": "active",
              "type": {"coding": [{"system": "http://hl7.org/fhir/uv/aitransparency/CodeSystem/AIdeviceTypeCS",
                                   "code": "Artificial-Intelligence"}]}}  # fmt: skip
    assert client.post(f"{BASE}/Device", json=device).status_code == 201
    response = client.post(f"{BASE}/Device/$validate", json={"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": device}, {"name": "profile", "valueUri": ig}]})  # fmt: skip
    (warning,) = response.json()["issue"]
    assert warning["severity"] == "warning" and "not held" in warning["diagnostics"]
    assert validate(client, device, profile=urls.AI_DEVICE) != []  # DermBridge's own asks for more


def clinician_finding() -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "meta": {"profile": [urls.CLINICIAN_FINDING]},
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                   "code": "imaging"}]}],
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "439401001", "display": "Diagnosis"}]},
        "subject": {"reference": "Patient/p1"},
        "focus": [{"reference": "BodyStructure/b1"}],
        "performer": [{"reference": "Practitioner/r1"}],
        "method": {"coding": [{"system": "urn:dermbridge:method", "code": "clinician-review"}]},
        "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": "400096001"}]},
    }  # fmt: skip


def test_a_clinician_finding_of_equivocal_is_refused_by_its_profile(client: FhirTestClient) -> None:
    """Derm review 4, H1: "Diagnosis = Equivocal" is no clinician finding (invariant dbr-cf-1)."""
    finding = clinician_finding()
    assert "dbr-cf-1" not in json.dumps(validate(client, finding, profile=urls.CLINICIAN_FINDING))
    equivocal = {
        **finding,
        "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": "42425007"}]},
    }
    issues = validate(client, equivocal, profile=urls.CLINICIAN_FINDING)
    assert "dbr-cf-1" in json.dumps(issues), issues


def test_an_amended_or_corrected_clinician_finding_keeps_its_profile(client: FhirTestClient) -> None:
    """Derm review 4, M8: a clinician who corrects their finding after sign-off can still claim the profile;
    a finding that was never signed (preliminary) cannot."""
    for status in ("final", "amended", "corrected"):
        issues = validate(client, {**clinician_finding(), "status": status}, profile=urls.CLINICIAN_FINDING)
        assert "Observation.status" not in expressions(issues) and "dbr-cf-2" not in json.dumps(issues), issues
    issues = validate(client, {**clinician_finding(), "status": "preliminary"}, profile=urls.CLINICIAN_FINDING)
    assert "dbr-cf-2" in json.dumps(issues), issues


def _prediction(card: Any) -> dict[str, Any]:
    context = ImageContext("1.2.3", "p1", "m1", "s1", "r1", lesion_id="b1", acquired="2026-11-30T10:00:00Z")
    return diagnosis_observation(context, card, "d1", MELANOMA, 0.8, "2026-11-30T12:00:00Z", "risk-1")


def test_an_ai_result_is_never_final_and_a_demonstration_model_is_never_coded(client: FhirTestClient) -> None:
    """Derm review 4, M8: a final AI result with no clinician, and a demonstration model's coded melanoma, were
    accepted by the profiles whose text says "preliminary until reviewed" and "text only"."""
    clinical, demonstration = _prediction(CARD), _prediction(demo_card("1"))
    assert validate(client, clinical, profile=urls.AI_PREDICTED_DIAGNOSIS) == []
    assert validate(client, demonstration, profile=urls.AI_PREDICTED_DIAGNOSIS) == []  # text only, as written
    withdrawn = {**clinical, "status": "entered-in-error"}  # an image deleted over DICOMweb (fhir_links)
    assert validate(client, withdrawn, profile=urls.AI_PREDICTED_DIAGNOSIS) == []
    final = validate(client, {**clinical, "status": "final"}, profile=urls.AI_PREDICTED_DIAGNOSIS)
    assert "dbr-ai-1" in json.dumps(final), final
    assert "dbr-ai-1" in json.dumps(validate(client, {**risk_result(), "status": "final"}))
    coded = {**demonstration, "valueCodeableConcept": {"coding": [MELANOMA_CODING], "text": "melanoma"}}
    assert "dbr-ai-2" in json.dumps(validate(client, coded, profile=urls.AI_PREDICTED_DIAGNOSIS))


MELANOMA_CODING = {"system": "http://snomed.info/sct", "code": "93655004", "display": "Malignant melanoma of skin"}


def test_validate_judges_the_r4_bindings_a_write_refuses(client: FhirTestClient) -> None:
    """A Condition (no profile of its own here) whose clinicalStatus is outside R4's required binding: a
    create answers 422, and ``$validate`` says so at the same element instead of "all OK"."""
    condition = {
        "resourceType": "Condition",
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                       "code": "bogus"}]},
        "subject": {"reference": "Patient/p1"},
    }  # fmt: skip
    refused = client.post(f"{BASE}/Condition", json=condition)
    assert refused.status_code == 422, refused.text
    refused_at = expressions(refused.json()["issue"])
    errors = validate(client, condition)
    assert expressions(errors) == refused_at == {"Condition.clinicalStatus"}
    assert len(errors) == 1
