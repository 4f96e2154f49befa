"""``$ai-performance`` on a constructed cohort whose figures were computed by hand (cohort.COHORT):
counts, sensitivity and specificity with Wilson 95% intervals, the reference standard of each figure,
subgroups, the withheld figures of small strata, the bounds, and who may ask."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from fhir_server.operation_definitions import canonical
from fhir_server.outcomes.operation import AI_PERFORMANCE_DEFINITION
from tests.conftest import BASE, make_client
from tests.fhir_server.outcomes.cohort import MELANOMA, NAEVUS, WHEN, Cohort, ai_result, pathology, server_write
from tests.fhir_server.security.smart import IdentityProvider
from tests.schema import assert_r4

GROUND_TRUTH = "urn:dermbridge:outcome|histology-ground-truth"


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cohort]:
    directory = tmp_path_factory.mktemp("outcomes")
    idp = IdentityProvider(directory)
    with make_client(directory / "var", **idp.settings) as client:
        built = Cohort(client)
        built.idp = idp
        built.linked()
        yield built


def parts(parameter: dict[str, Any]) -> dict[str, Any]:
    return {p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in parameter["part"]}


def figure(body: dict[str, Any], test: str, reference: str, stratum: str = "all", value: str = "all") -> dict[str, Any]:
    found = [
        parts(p)
        for p in body["parameter"]
        if p["name"] == "figure"
        and parts(p)["test"] == test
        and parts(p)["reference"] == reference
        and parts(p)["stratum"] == stratum
        and parts(p)["stratum-value"] == value
    ]
    assert len(found) == 1, found
    return found[0]


def top(body: dict[str, Any], name: str) -> Any:
    return next(next(v for k, v in p.items() if k.startswith("value")) for p in body["parameter"] if p["name"] == name)


def test_sensitivity_and_specificity_against_histology_with_wilson_intervals(cohort: Cohort) -> None:
    response = cohort.performance(minCount="5")
    assert response.status_code == 200, response.text
    body = response.json()
    assert top(body, "lesions") == 15 and top(body, "truncated") is False
    assert top(body, "model")["reference"] == f"Device/{cohort.device}"
    ai = figure(body, "ai", "histology")
    assert ai["condition"]["code"] == "melanoma"
    assert ai["reference-standard"].startswith("histopathology")
    assert (ai["tp"], ai["fn"], ai["fp"], ai["tn"], ai["n"]) == (4, 1, 2, 5, 12)
    assert (ai["sensitivity"], ai["sensitivity-ci95-lower"], ai["sensitivity-ci95-upper"]) == (0.8, 0.3755, 0.9638)
    assert (ai["specificity"], ai["specificity-ci95-lower"], ai["specificity-ci95-upper"]) == (0.7143, 0.3589, 0.9178)


def test_the_clinician_reference_is_kept_apart_from_histology(cohort: Cohort) -> None:
    body = cohort.performance(minCount="1").json()
    clinician = figure(body, "clinician", "histology")  # the clinicians judged by histology
    assert (clinician["tp"], clinician["fp"], clinician["tn"], clinician["fn"]) == (1, 1, 0, 0)
    by_clinician = figure(body, "ai", "clinician")  # only lesions without histology
    assert (by_clinician["tp"], by_clinician["fn"], by_clinician["tn"], by_clinician["fp"]) == (1, 1, 1, 0)
    assert "without histopathology only" in by_clinician["reference-standard"]
    agreement = next(
        parts(p)
        for p in body["parameter"]
        if p["name"] == "agreement" and parts(p)["reference"] == "histology" and parts(p)["test"] == "ai"
        and parts(p)["stratum"] == "all"
    )  # fmt: skip
    assert (agreement["agreed"], agreement["n"], agreement["proportion"]) == (9, 12, 0.75)
    assert (agreement["proportion-ci95-lower"], agreement["proportion-ci95-upper"]) == (0.4677, 0.9111)


def test_strata_by_skin_type_age_band_and_body_site(cohort: Cohort) -> None:
    body = cohort.performance(minCount="1").json()
    v = figure(body, "ai", "histology", "fitzpatrick", "V")
    assert (v["tp"], v["fn"], v["fp"], v["tn"]) == (3, 0, 2, 1)
    assert (v["sensitivity"], v["sensitivity-ci95-lower"], v["sensitivity-ci95-upper"]) == (1.0, 0.4385, 1.0)
    one = figure(body, "ai", "histology", "fitzpatrick", "I")
    assert (one["tp"], one["fn"], one["tn"]) == (1, 1, 1)
    unknown = figure(body, "ai", "histology", "fitzpatrick", "not recorded")
    assert (unknown["tn"], unknown["n"]) == (3, 3)
    old = figure(body, "ai", "histology", "age-band", "80+")
    assert (old["fn"], old["tn"], old["n"]) == (1, 1, 2)
    face = figure(body, "ai", "histology", "body-site", "head and neck")
    assert (face["tp"], face["n"]) == (1, 1)
    assert figure(body, "ai", "histology", "device", "Test model 1.0")["n"] == 12


def test_small_strata_say_so_instead_of_a_figure(cohort: Cohort) -> None:
    body = cohort.performance().json()  # minCount 10 by default: 5 melanomas are too few
    ai = figure(body, "ai", "histology")
    assert "sensitivity" not in ai and "specificity" not in ai
    assert ai["sensitivity-status"].startswith("insufficient data: 5 lesion(s) with the condition")
    assert ai["tp"] == 4  # the counts are still given


def test_bounds_and_bad_parameters_are_operation_outcomes(cohort: Cohort) -> None:
    truncated = cohort.performance(maxCases="3").json()
    assert top(truncated, "truncated") is True and top(truncated, "lesions") == 3
    assert top(truncated, "covered-to")
    for params, expression in (({"maxCases": "0"}, "maxCases"), ({"from": "soon"}, "from"),
                               ({"to": "2000-01-01"}, "from")):  # fmt: skip
        response = cohort.performance(**params)
        assert response.status_code == 400, response.text
        assert expression in response.json()["issue"][0]["expression"]
    missing = cohort.client.get(f"{BASE}/$ai-performance", params={"model": "Device/nope", "from": "2020-01-01"})
    assert missing.status_code == 404
    by_key = cohort.performance(model="test-model@1.0", minCount="5").json()
    assert figure(by_key, "ai", "histology")["tp"] == 4


def test_a_patient_token_is_refused_and_other_tenants_see_nothing(cohort: Cohort) -> None:
    client, idp = cohort.client, cohort.idp
    params = {"model": f"Device/{cohort.device}", "from": "2020-01-01"}
    own = idp.headers("patient/*.rs", patient=cohort.patients[0])
    assert client.get(f"{BASE}/$ai-performance", params=params, headers=own).status_code == 403
    narrow = idp.headers("user/Observation.rs user/DiagnosticReport.rs")  # no Patient, BodyStructure, Device
    assert client.get(f"{BASE}/$ai-performance", params=params, headers=narrow).status_code == 403
    reader = idp.headers("user/*.rs")  # a clinician's read access is enough
    assert client.get(f"{BASE}/$ai-performance", params=params, headers=reader).status_code == 200
    client.portal.call(client.app.state.engine.create_tenant, "other")  # type: ignore[attr-defined]
    other = idp.headers("system/*.rs", tenant="other")
    answer = client.get("/fhir/other/$ai-performance", params=params, headers=other)
    assert answer.status_code == 404  # the other tenant has no such model: nothing crosses tenants
    assert client.get(f"{BASE}/$ai-performance", params=params, headers=other).status_code in (401, 403, 404)


def test_the_capability_statement_declares_the_operation(cohort: Cohort) -> None:
    statement = cohort.client.get(f"{BASE}/metadata").json()
    declared = {o["name"]: o["definition"] for o in statement["rest"][0]["operation"]}
    assert declared["ai-performance"] == canonical(AI_PERFORMANCE_DEFINITION)
    assert_r4(AI_PERFORMANCE_DEFINITION)


def test_a_demonstration_model_is_named_and_withdrawn_results_are_not_counted(cohort: Cohort) -> None:
    demo = cohort.post("Device", {"resourceType": "Device", "deviceName": [{"name": "Demo", "type": "model-name"}]})
    subject = {"reference": f"Patient/{cohort.patients[0]}"}
    shown, withdrawn = (ai_result(subject, lesion, demo, True, WHEN.isoformat()) for lesion in cohort.lesions[:2])
    shown["meta"] = {"tag": [{"system": "urn:dermbridge:ai-use", "code": "demonstration"}]}
    withdrawn["status"] = "entered-in-error"
    server_write(cohort.client, shown)
    server_write(cohort.client, withdrawn)
    body = cohort.performance(model=f"Device/{demo}").json()
    assert top(body, "lesions") == 1
    assert top(body, "warning").startswith("DEMONSTRATION model")


def test_what_a_client_forges_is_refused_or_not_counted(cohort: Cohort) -> None:
    """Pentest 3: a patient's own pathology report, client-written AI results and clinician diagnoses."""
    client, idp = cohort.client, cohort.idp
    before = cohort.performance(minCount="1").json()
    index = 12  # no histology, AI positive, the clinician said melanoma
    subject, lesion = {"reference": f"Patient/{cohort.patients[index]}"}, cohort.lesions[index]
    own = idp.headers("patient/*.cruds", patient=cohort.patients[index])
    report = pathology(subject, f"BodyStructure/{lesion}", NAEVUS, f"Practitioner/{cohort.pathologist}")
    refused = client.post(f"{BASE}/DiagnosticReport", json=report, headers=own)
    assert refused.status_code == 403 and "patient/" in refused.text, refused.text
    forged_ai = ai_result(subject, lesion, cohort.device, False, WHEN.isoformat())
    admin: dict[str, str] = {}
    for headers in (own, admin):  # neither a patient nor even an admin client writes an AI result
        refused = client.post(f"{BASE}/Observation", json=forged_ai, headers=headers)
        assert refused.status_code == 409 and "urn:dermbridge:ai-risk" in refused.text, refused.text
    diagnosis = {
        "resourceType": "Observation",
        "status": "final",
        "subject": subject,
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "439401001"}]},
        "focus": [{"reference": f"BodyStructure/{lesion}"}],
        "performer": [{"reference": f"Practitioner/{cohort.reviewer}"}],
        "issued": "2099-01-01T00:00:00Z",
        "valueCodeableConcept": {"coding": [NAEVUS]},
    }
    assert client.post(f"{BASE}/Observation", json=diagnosis, headers=own).status_code == 201  # not counted
    diagnosis["method"] = {"coding": [{"system": "urn:dermbridge:method", "code": "clinician-review"}]}
    refused = client.post(f"{BASE}/Observation", json=diagnosis, headers=own)
    assert refused.status_code == 409 and "$complete" in refused.text
    cohort.linked()
    after = cohort.performance(minCount="1").json()
    assert [p for p in after["parameter"] if p["name"] != "to"] == [p for p in before["parameter"] if p["name"] != "to"]


def test_histology_dated_before_the_imaging_is_excluded(cohort: Cohort) -> None:
    """Derm review 3 H4: a report dated 400 days before the image was counted as a true positive."""
    client = cohort.client
    device = cohort.post("Device", {"resourceType": "Device", "deviceName": [{"name": "Other", "type": "model-name"}]})
    subject = {"reference": f"Patient/{cohort.post('Patient', {'resourceType': 'Patient'})}"}
    lesion = cohort.post("BodyStructure", {"resourceType": "BodyStructure", "patient": subject})
    server_write(client, ai_result(subject, lesion, device, True, WHEN.isoformat()))
    earlier = pathology(subject, f"BodyStructure/{lesion}", MELANOMA, f"Practitioner/{cohort.pathologist}")
    before = WHEN - timedelta(days=400)
    earlier.update(effectiveDateTime=before.isoformat(), issued=(before + timedelta(days=1)).isoformat())
    cohort.post("DiagnosticReport", earlier)
    for _ in range(50):  # the outbox consumer links it (bounded)
        found = client.get(f"{BASE}/Observation", params={"focus": f"BodyStructure/{lesion}", "code": GROUND_TRUTH})
        if found.json().get("entry"):
            break
        client.portal.call(client.app.state.dispatcher.drain)  # type: ignore[attr-defined]
    body = cohort.performance(model=f"Device/{device}", minCount="1").json()
    ai = figure(body, "ai", "histology")
    assert (ai["tp"], ai["n"]) == (0, 0)
    excluded = {parts(p)["reason"]: parts(p)["count"] for p in body["parameter"] if p["name"] == "excluded"}
    assert [n for reason, n in excluded.items() if "before the lesion's first imaging" in reason] == [1], excluded


def test_the_method_states_the_biases_and_reads_are_split_into_confirmed_and_overridden(cohort: Cohort) -> None:
    """Derm review 3 H3 and H5: AI-assisted clinician reads, partial verification, the operating point."""
    body = cohort.performance(minCount="1").json()
    assert (top(body, "clinician-confirmed"), top(body, "clinician-overridden")) == (2, 3)
    method = top(body, "method")
    for said in ("AI-assisted", "Partial verification", "sensitivity against histology is overestimated",
                 "malignantAbove", "in situ and invasive melanoma are counted together", "latest histopathology",
                 "before the lesion's first imaging"):  # fmt: skip
        assert said in method, said
    assert "AI-assisted" in figure(body, "ai", "clinician")["reference-standard"]


def test_extreme_years_with_an_offset_are_400_not_500(cohort: Cohort) -> None:
    """Pentest 3 finding 9: year 1 or 9999 with a timezone offset overflowed on conversion to UTC (500)."""
    extremes = (({"from": "0001-01-01T00:00:00+01:00"}, "from"), ({"to": "9999-12-31T23:59:59-01:00"}, "to"),
                ({"from": "1800-01-01"}, "from"))  # fmt: skip
    for params, expression in extremes:
        response = cohort.performance(**params)
        assert response.status_code == 400, response.text
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["expression"] == [expression]
