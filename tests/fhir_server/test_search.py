"""Search (search.html) on a store loaded with the Synthea sample, and on crafted data."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from tests.conftest import BASE, ENGINES, FhirTestClient, engine_settings
from tests.factories import observation, patient, set_enforcement

PATIENT = "79a66c97-6131-3213-f3c9-4606946ab056"  # Mrs. Marine542 Ai120 Upton904
NPI = "http://hl7.org/fhir/sid/us-npi|9999974493"


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Search runs on every engine (``synthea_client`` is parametrised the same way)."""
    return engine_settings(request)


def search(client: FhirTestClient, path: str, **params: Any) -> dict[str, Any]:
    response = client.get(f"{BASE}/{path}", params=params)
    assert response.status_code == 200, response.text
    bundle: dict[str, Any] = response.json()
    assert bundle["type"] == "searchset"
    return bundle


def ids(bundle: dict[str, Any], mode: str = "match") -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == mode]


def types(bundle: dict[str, Any], mode: str) -> set[str]:
    return {e["resource"]["resourceType"] for e in bundle.get("entry", []) if e["search"]["mode"] == mode}


# -- Synthea --------------------------------------------------------------------------------------


def test_string_default_is_case_and_accent_insensitive_prefix(synthea_client: FhirTestClient) -> None:
    assert ids(search(synthea_client, "Patient", name="MARINE")) == [PATIENT]
    assert search(synthea_client, "Patient", name="arine")["total"] == 0
    assert search(synthea_client, "Patient", **{"name:contains": "arine"})["total"] == 1
    assert search(synthea_client, "Patient", **{"name:exact": "marine542"})["total"] == 0
    assert search(synthea_client, "Patient", **{"name:exact": "Marine542"})["total"] == 1


def test_token_with_and_without_system(synthea_client: FhirTestClient) -> None:
    everything = search(synthea_client, "Encounter", _summary="count")["total"]
    amb = search(synthea_client, "Encounter", **{"class": "AMB"}, _summary="count")["total"]
    with_system = search(
        synthea_client, "Encounter", **{"class": "http://terminology.hl7.org/CodeSystem/v3-ActCode|AMB"}
    )["total"]
    wrong_system = search(synthea_client, "Encounter", **{"class": "http://example.org|AMB"})["total"]
    negated = search(synthea_client, "Encounter", **{"class:not": "AMB"}, _summary="count")["total"]
    assert 0 < amb == with_system < everything
    assert wrong_system == 0
    assert negated == everything - amb


def test_token_text_modifier(synthea_client: FhirTestClient) -> None:
    bundle = search(synthea_client, "Condition", **{"code:text": "hypertension"})
    assert bundle["total"] > 0
    for item in bundle["entry"]:
        assert "hypertension" in item["resource"]["code"]["text"].lower()


def test_or_and_and(synthea_client: FhirTestClient) -> None:
    a = search(synthea_client, "Patient", gender="male")["total"]
    b = search(synthea_client, "Patient", gender="female")["total"]
    assert search(synthea_client, "Patient", gender="male,female")["total"] == a + b
    both = synthea_client.get(f"{BASE}/Patient", params=[("gender", "male"), ("gender", "female")]).json()
    assert both["total"] == 0


def test_date_prefixes_on_partial_dates(synthea_client: FhirTestClient) -> None:
    all_patients = search(synthea_client, "Patient", _count=100)["entry"]
    births = sorted(e["resource"]["birthDate"] for e in all_patients)
    year = births[0][:4]
    in_year = [b for b in births if b.startswith(year)]
    assert search(synthea_client, "Patient", birthdate=year)["total"] == len(in_year)
    assert search(synthea_client, "Patient", birthdate=f"lt{year}")["total"] == 0
    after = [b for b in births if b[:4] > year]
    assert search(synthea_client, "Patient", birthdate=f"gt{year}")["total"] == len(after)
    assert search(synthea_client, "Patient", birthdate=f"ge{year}")["total"] == len(births)
    assert search(synthea_client, "Patient", birthdate=f"eb{births[-1]}")["total"] == len(births) - births.count(
        births[-1]
    )
    assert search(synthea_client, "Patient", birthdate=f"ne{births[0]}")["total"] == len(births) - births.count(
        births[0]
    )


def test_date_on_periods(synthea_client: FhirTestClient) -> None:
    later = search(synthea_client, "Encounter", date="ge2020-01-01", _count=200)
    assert later["total"] > 0
    for item in later["entry"]:
        assert item["resource"]["period"]["end"][:10] >= "2020-01-01"


def test_reference_forms(synthea_client: FhirTestClient) -> None:
    by_id = search(synthea_client, "Encounter", subject=PATIENT, _summary="count")["total"]
    by_type = search(synthea_client, "Encounter", subject=f"Patient/{PATIENT}", _summary="count")["total"]
    by_modifier = search(synthea_client, "Encounter", **{"subject:Patient": PATIENT}, _summary="count")["total"]
    by_patient = search(synthea_client, "Encounter", patient=PATIENT, _summary="count")["total"]
    absolute = f"http://testserver{BASE}/Patient/{PATIENT}"
    by_url = search(synthea_client, "Encounter", subject=absolute, _summary="count")["total"]
    assert by_id == by_type == by_modifier == by_patient == by_url > 0


def test_conditional_references_were_resolved_and_chain(synthea_client: FhirTestClient) -> None:
    via_chain = search(synthea_client, "Encounter", **{"participant.identifier": NPI}, _count=5)
    assert via_chain["total"] > 0
    practitioner = search(synthea_client, "Practitioner", identifier=NPI)
    assert practitioner["total"] == 1
    pid = ids(practitioner)[0]
    direct = search(synthea_client, "Encounter", participant=f"Practitioner/{pid}", _summary="count")
    assert direct["total"] == via_chain["total"]


def test_chain_with_type_and_two_levels(synthea_client: FhirTestClient) -> None:
    one = search(synthea_client, "Encounter", **{"subject:Patient.name": "marine"}, _summary="count")["total"]
    assert one == search(synthea_client, "Encounter", subject=PATIENT, _summary="count")["total"]
    two = search(synthea_client, "Condition", **{"encounter.subject:Patient.name": "marine"}, _summary="count")["total"]
    assert two == search(synthea_client, "Condition", subject=PATIENT, _summary="count")["total"]


def test_reverse_chain_has(synthea_client: FhirTestClient) -> None:
    with_hypertension = search(synthea_client, "Patient", **{"_has:Condition:patient:code:text": "hypertension"})
    assert 0 < with_hypertension["total"] < search(synthea_client, "Patient")["total"]
    for pid in ids(with_hypertension):
        conditions = search(synthea_client, "Condition", patient=pid, **{"code:text": "hypertension"})
        assert conditions["total"] > 0


def test_include_and_revinclude(synthea_client: FhirTestClient) -> None:
    bundle = search(synthea_client, "Encounter", subject=PATIENT, _include="Encounter:subject", _count=3)
    assert len(ids(bundle)) == 3
    assert ids(bundle, "include") == [PATIENT]
    wildcard = search(synthea_client, "Encounter", subject=PATIENT, _include="*", _count=3)
    assert {"Patient", "Practitioner", "Location"} <= types(wildcard, "include")
    rev = search(synthea_client, "Patient", _id=PATIENT, _revinclude="Encounter:subject")
    encounters = search(synthea_client, "Encounter", subject=PATIENT, _summary="count")["total"]
    assert len(ids(rev, "include")) == encounters


def test_include_iterate(synthea_client: FhirTestClient) -> None:
    bundle = synthea_client.get(
        f"{BASE}/Condition",
        params=[
            ("subject", PATIENT),
            ("_count", "1"),
            ("_include", "Condition:encounter"),
            ("_include:iterate", "Encounter:service-provider"),
        ],
    ).json()
    assert types(bundle, "include") == {"Encounter", "Organization"}


def test_sort_several_keys(synthea_client: FhirTestClient) -> None:
    bundle = search(synthea_client, "Patient", _sort="gender,-birthdate", _count=50)
    keys = [(e["resource"]["gender"], e["resource"]["birthDate"]) for e in bundle["entry"]]
    assert keys == sorted(keys, key=lambda k: (k[0], [-ord(c) for c in k[1]]))


def test_paging_is_complete_and_stable(synthea_client: FhirTestClient) -> None:
    seen: list[str] = []
    bundle = search(synthea_client, "Condition", patient=PATIENT, _count=7, _sort="_id")
    total = bundle["total"]
    pages = 0
    while True:
        seen.extend(ids(bundle))
        pages += 1
        following = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        if not following:
            break
        url = urlsplit(following[0])
        bundle = synthea_client.get(url.path, params=parse_qsl(url.query)).json()
    assert len(seen) == len(set(seen)) == total
    assert pages == -(-total // 7)
    assert seen == sorted(seen)


def test_total_modes(synthea_client: FhirTestClient) -> None:
    assert "total" not in search(synthea_client, "Encounter", _total="none")
    assert search(synthea_client, "Encounter", _total="accurate")["total"] == 1215
    counted = search(synthea_client, "Encounter", _summary="count")
    assert counted["total"] == 1215
    assert "entry" not in counted


def test_compartment_search_and_everything(synthea_client: FhirTestClient) -> None:
    compartment = search(synthea_client, f"Patient/{PATIENT}/Encounter", _summary="count")["total"]
    assert compartment == search(synthea_client, "Encounter", patient=PATIENT, _summary="count")["total"]
    everything = synthea_client.get(f"{BASE}/Patient/{PATIENT}/$everything").json()
    kinds = {e["resource"]["resourceType"] for e in everything["entry"]}
    assert {"Patient", "Encounter", "Condition", "Procedure"} <= kinds
    assert everything["total"] == len(everything["entry"])
    only = synthea_client.get(f"{BASE}/Patient/{PATIENT}/$everything", params={"_type": "Condition"}).json()
    assert {e["resource"]["resourceType"] for e in only["entry"]} == {"Patient", "Condition"}


def test_system_search_with_type(synthea_client: FhirTestClient) -> None:
    bundle = search(synthea_client, "", _type="Patient,Practitioner", _count=200)
    assert types(bundle, "match") == {"Patient", "Practitioner"}
    assert bundle["total"] == 13 + 43


def test_post_search_with_form_body(synthea_client: FhirTestClient) -> None:
    response = synthea_client.post(
        f"{BASE}/Patient/_search", content="name=marine", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 200
    assert ids(response.json()) == [PATIENT]


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"bogus": "1"}, 400),
        ({"birthdate": "not-a-date"}, 400),
        ({"name:nonsense": "x"}, 400),
        ({"_sort": "nonsense"}, 400),
        ({"_count": "-1"}, 400),
        ({"_include": "Encounter:subject"}, 400),
        ({"general-practitioner.bogus": "x"}, 400),
        ({"_text": "x"}, 400),
        ({"gender:below": "female"}, 400),  # :below on a token needs system|code
    ],
)
def test_bad_search_parameters_are_400(synthea_client: FhirTestClient, params: dict[str, str], status: int) -> None:
    response = synthea_client.get(f"{BASE}/Patient", params=params)
    assert response.status_code == status
    assert response.json()["resourceType"] == "OperationOutcome"


def test_in_a_shipped_r4_value_set_matches_what_has_a_code_of_it(synthea_client: FhirTestClient) -> None:
    genders = "http://hl7.org/fhir/ValueSet/administrative-gender"
    coded = search(synthea_client, "Patient", **{"gender:missing": "false", "_total": "accurate"})["total"]
    assert coded > 0
    assert search(synthea_client, "Patient", **{"gender:in": genders, "_total": "accurate"})["total"] == coded
    assert search(synthea_client, "Patient", **{"gender:not-in": genders, "_total": "accurate"})["total"] == 0


def test_lenient_handling_reports_ignored_parameters(synthea_client: FhirTestClient) -> None:
    response = synthea_client.get(
        f"{BASE}/Patient", params={"bogus": "1", "name": "marine"}, headers={"Prefer": "handling=lenient"}
    )
    bundle = response.json()
    assert ids(bundle) == [PATIENT]
    outcome = [e for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert "bogus" in outcome[0]["resource"]["issue"][0]["diagnostics"]
    assert "bogus" not in next(link["url"] for link in bundle["link"] if link["relation"] == "self")


# -- crafted data ---------------------------------------------------------------------------------


def _create(client: FhirTestClient, resource: dict[str, Any]) -> str:
    response = client.post(f"{BASE}/{resource['resourceType']}", json=resource)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def test_number_and_quantity_prefixes(client: FhirTestClient) -> None:
    pid = _create(client, patient())
    for value in (60, 72, 72.4, 100):
        _create(client, observation(f"Patient/{pid}", value=value))

    def count(**params: str) -> int:
        return int(search(client, "Observation", **params)["total"])

    assert count(**{"value-quantity": "72"}) == 2  # 72 and 72.4 are within [71.5, 72.5)
    assert count(**{"value-quantity": "72.0"}) == 1
    assert count(**{"value-quantity": "gt72"}) == 2
    assert count(**{"value-quantity": "ge72"}) == 3
    assert count(**{"value-quantity": "lt72"}) == 1
    assert count(**{"value-quantity": "le60"}) == 1
    assert count(**{"value-quantity": "ap100"}) == 1
    assert count(**{"value-quantity": "72|http://unitsofmeasure.org|/min"}) == 2
    assert count(**{"value-quantity": "72|http://unitsofmeasure.org|mg"}) == 0


def test_composite_parameter(client: FhirTestClient) -> None:
    pid = _create(client, patient())
    _create(client, observation(f"Patient/{pid}", code="8867-4", value=72))
    _create(client, observation(f"Patient/{pid}", code="9279-1", value=16))
    hits = search(client, "Observation", **{"code-value-quantity": "http://loinc.org|8867-4$gt70"})
    assert hits["total"] == 1
    crossed = search(client, "Observation", **{"code-value-quantity": "http://loinc.org|9279-1$gt70"})
    assert crossed["total"] == 0


def test_missing_modifier_and_id(client: FhirTestClient) -> None:
    with_birth = _create(client, patient())
    without = _create(client, {"resourceType": "Patient", "name": [{"family": "NoBirth"}]})
    assert ids(search(client, "Patient", **{"birthdate:missing": "true"})) == [without]
    assert ids(search(client, "Patient", **{"birthdate:missing": "false"})) == [with_birth]
    assert ids(search(client, "Patient", _id=without)) == [without]
    assert ids(search(client, "Patient", **{"_id:not": without})) == [with_birth]


def test_escaping_commas_and_pipes(client: FhirTestClient) -> None:
    odd = _create(client, patient(identifier=[{"system": "urn:x", "value": "a,b|c"}]))
    _create(client, patient(identifier=[{"system": "urn:x", "value": "a"}]))
    assert ids(search(client, "Patient", identifier="urn:x|a\\,b\\|c")) == [odd]


def test_tag_profile_security_source_and_last_updated(client: FhirTestClient) -> None:
    meta = {
        "tag": [{"system": "urn:tags", "code": "derm"}],
        "profile": ["http://example.org/StructureDefinition/derm-patient"],
        "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}],
        "source": "urn:device:dermatoscope-1",
    }
    set_enforcement(client, unknown="accept")  # the claimed profile is not one the server holds
    tagged = _create(client, patient(meta=meta))
    plain = _create(client, patient())
    assert ids(search(client, "Patient", _tag="urn:tags|derm")) == [tagged]
    assert ids(search(client, "Patient", _profile="http://example.org/StructureDefinition/derm-patient")) == [tagged]
    assert ids(search(client, "Patient", **{"_profile:below": "http://example.org/"})) == [tagged]
    assert ids(search(client, "Patient", _security="R")) == [tagged]
    assert ids(search(client, "Patient", _source="urn:device:dermatoscope-1")) == [tagged]
    stamp = client.get(f"{BASE}/Patient/{plain}").json()["meta"]["lastUpdated"]
    assert plain in ids(search(client, "Patient", _lastUpdated=f"ge{stamp}"))
    assert search(client, "Patient", _lastUpdated="lt2000-01-01")["total"] == 0


def test_paging_does_not_shift_when_resources_are_created(client: FhirTestClient) -> None:
    for n in range(5):
        _create(client, patient(family=f"P{n}"))
    first = search(client, "Patient", _count=2)
    following = next(link["url"] for link in first["link"] if link["relation"] == "next")
    for n in range(3):
        _create(client, patient(family=f"New{n}"))
    url = urlsplit(following)
    second = client.get(url.path, params=parse_qsl(url.query)).json()
    assert second["total"] == 5
    assert not set(ids(first)) & set(ids(second))
