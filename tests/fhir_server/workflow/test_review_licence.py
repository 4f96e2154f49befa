"""Issue 14, "Review queue": a tier that requires a licence in a jurisdiction (``Practitioner.qualification``
issued by a licensing body whose address is the jurisdiction); an expired licence cannot claim (403 naming it)."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_server.workflow.review.policy import DERMATOLOGY, ReviewPolicyError, parse_policy
from tests.conftest import FhirTestClient
from tests.fhir_server.workflow.review_case import DERMATOLOGY as DERMATOLOGY_SPECIALTY
from tests.fhir_server.workflow.review_case import ReviewCase, Reviewer

MD = "http://terminology.hl7.org/CodeSystem/v2-0360|MD"  # v2 table 0360 Degree/license/certificate: Doctor of Medicine
POLICY = {"tiers": {"dermatologist": {"specialties": [DERMATOLOGY],
                                      "licence": {"codes": [MD], "jurisdictions": ["GB", "US-CA"]}}}}  # fmt: skip


@pytest.fixture
def case(client: FhirTestClient) -> ReviewCase:
    case = ReviewCase(client)
    case.set_policy(POLICY)
    return case


def regulator(case: ReviewCase, name: str, country: str, state: str | None = None) -> str:
    address = {"country": country, **({"state": state} if state else {})}
    return case.post("Organization", {"resourceType": "Organization", "name": name, "address": [address]})


def licensed(case: ReviewCase, name: str, *licences: tuple[str, str | None]) -> Reviewer:
    """A dermatologist (an active PractitionerRole) holding an MD licence from each (issuer, end date)."""
    md = {"coding": [{"system": MD.split("|")[0], "code": "MD", "display": "Doctor of Medicine"}]}
    qualifications: list[dict[str, Any]] = [
        {"code": md, "issuer": {"reference": f"Organization/{issuer}"},
         "period": {"start": "2015-01-01", **({"end": end} if end else {})}}
        for issuer, end in licences
    ]  # fmt: skip
    person = {"resourceType": "Practitioner", "name": [{"text": name}], **({"qualification": qualifications}
                                                                          if qualifications else {})}  # fmt: skip
    practitioner = case.post("Practitioner", person)
    role = {"resourceType": "PractitionerRole", "active": True, "specialty": [DERMATOLOGY_SPECIALTY],
            "practitioner": {"reference": f"Practitioner/{practitioner}"}}  # fmt: skip
    case.post("PractitionerRole", role)
    return Reviewer(case.client, f"Practitioner/{practitioner}")


def test_a_current_licence_in_the_jurisdiction_may_claim(case: ReviewCase) -> None:
    task = case.open()["id"]
    california = regulator(case, "Medical Board of California", "US", "CA")
    reviewer = licensed(case, "Dr Current", (california, None))
    assert reviewer.get("Task/$worklist").json()["total"] == 1
    assert reviewer.op(task, "claim").status_code == 200


def test_an_expired_licence_cannot_claim_and_the_403_names_it(case: ReviewCase) -> None:
    task = case.open()["id"]
    gmc = regulator(case, "General Medical Council", "GB")
    lapsed = licensed(case, "Dr Lapsed", (gmc, "2024-06-30"))
    refused = lapsed.op(task, "claim")
    assert refused.status_code == 403
    words = refused.json()["issue"][0]["diagnostics"]
    assert f"{lapsed.practitioner} qualification[0] ({MD}, issued by Organization/{gmc})" in words
    assert "the licence expired on 2024-06-30" in words
    assert lapsed.get("Task/$worklist").json()["total"] == 0  # not offered either


def test_a_licence_elsewhere_or_none_cannot_claim(case: ReviewCase) -> None:
    task = case.open()["id"]
    texas = regulator(case, "Texas Medical Board", "US", "TX")
    elsewhere = licensed(case, "Dr Texas", (texas, None))
    refused = elsewhere.op(task, "claim")
    assert refused.status_code == 403
    assert "holds no licence the tier requires" in refused.json()["issue"][0]["diagnostics"]
    assert "issued in GB or US-CA" in refused.json()["issue"][0]["diagnostics"]
    assert licensed(case, "Dr Unlicensed").op(task, "claim").status_code == 403


def test_without_the_requirement_the_role_alone_suffices(case: ReviewCase) -> None:
    case.set_policy({})
    task = case.open()["id"]
    assert licensed(case, "Dr Role Only").op(task, "claim").status_code == 200


@pytest.mark.parametrize(
    ("licence", "words"),
    [({"codes": ["MD"]}, "'system|code'"), ({"jurisdictions": ["England"]}, "ISO 3166"), ({}, "names codes")],
)
def test_a_malformed_licence_requirement_is_refused(licence: dict[str, Any], words: str) -> None:
    with pytest.raises(ReviewPolicyError, match=words):
        parse_policy({"tiers": {"dermatologist": {"licence": licence}}})
