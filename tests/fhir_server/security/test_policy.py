"""The AccessPolicy on its own: ownership, write checks and how it bounds a search query."""

from __future__ import annotations

import pytest

from fhir_server.errors import OperationOutcomeError
from fhir_server.search.membership import owners
from fhir_server.search.request import parse_search
from fhir_server.security.policy import AccessPolicy
from fhir_server.security.scopes import Access, parse_scopes
from fhir_server.storage.query import ChainMatch, HasClause, IdClause, ParamClause, ReferenceMatch, SearchQuery
from tests.factories import observation


def policy(scopes: str, patient: str | None = None) -> AccessPolicy:
    return AccessPolicy.of(Access("default", "app", tuple(parse_scopes(scopes)), patient=patient))


def query(resource_type: str, *params: tuple[str, str]) -> SearchQuery:
    return parse_search((resource_type,), list(params), lenient=False, default_count=20, max_count=100).query


def test_owners_are_the_subject_or_patient_reference_not_the_performer() -> None:
    performed = observation("Patient/bob", performer=[{"reference": "Patient/alice"}])
    assert owners(performed) == {"bob"}
    assert owners({"resourceType": "Patient", "id": "alice"}) == {"alice"}
    assert owners({"resourceType": "Practitioner", "id": "p"}) == set()


def test_a_patient_scope_writes_only_what_its_patient_alone_owns() -> None:
    alice = policy("patient/Observation.cruds", patient="alice")
    assert alice.check_write("Observation", observation("Patient/alice"), "c") == "patient"
    for other in (observation("Patient/bob", performer=[{"reference": "Patient/alice"}]), observation("Group/g")):
        with pytest.raises(OperationOutcomeError) as refused:
            alice.check_write("Observation", other, "c")
        assert refused.value.status == 403


def test_a_chain_hop_needs_search_scope_and_is_narrowed_to_the_types_allowed() -> None:
    crossing = query("Observation", ("subject.name", "smith"))  # Patient, Group, Device, Location have a name
    with pytest.raises(OperationOutcomeError) as refused:
        policy("system/Observation.rs").bound(crossing)
    assert refused.value.status == 403
    bounded = policy("system/Observation.rs system/Patient.rs").bound(crossing)
    (clause,) = bounded.where
    assert isinstance(clause, ParamClause)
    assert [m.target_types for m in clause.matches if isinstance(m, ChainMatch)] == [("Patient",)]


def test_a_patient_scope_bounds_the_type_each_hop_and_each_has() -> None:
    alice = policy("patient/Observation.rs patient/Patient.rs", patient="alice")
    bounded = alice.bound(query("Patient", ("_has:Observation:subject:code", "8867-4")))
    owner, has = bounded.where
    assert owner == IdClause(("alice",))
    assert isinstance(has, HasClause)
    assert has.where[0] == ParamClause("subject", "reference", (ReferenceMatch("Patient", "alice"),))
    with pytest.raises(OperationOutcomeError):
        alice.bound(SearchQuery(("Observation", "Patient")))


def test_the_system_context_is_named_and_allows_everything() -> None:
    system = AccessPolicy.system("a test")
    assert system.decide("Observation", "d") == "all" and system.bound(query("Observation")) == query("Observation")
    assert AccessPolicy.nobody().decide("Observation", "r") == "none"


def test_reading_dicom_needs_imaging_study_and_patient_read_and_takes_the_narrower() -> None:
    assert policy("system/ImagingStudy.rs system/Patient.r").read_dicom("s") == "all"
    assert policy("user/ImagingStudy.rs user/Patient.r").read_dicom("r") == "all"
    assert policy("patient/ImagingStudy.rs patient/Patient.r", patient="alice").read_dicom("r") == "patient"
    assert policy("system/ImagingStudy.rs patient/Patient.r", patient="alice").read_dicom("s") == "patient"
    assert policy("patient/ImagingStudy.rs system/Patient.r", patient="alice").read_dicom("r") == "patient"
    assert AccessPolicy.system("a test").read_dicom("r") == "all"
    for refused in ("system/ImagingStudy.rs", "system/Patient.rs", "system/ImagingStudy.c system/Patient.r"):
        with pytest.raises(OperationOutcomeError) as error:
            policy(refused).read_dicom("r")
        assert error.value.status == 403


def test_storing_dicom_needs_create_on_imaging_study_under_a_user_or_system_scope() -> None:
    policy("system/ImagingStudy.c").store_dicom()
    policy("user/ImagingStudy.c").store_dicom()
    for refused in (policy("patient/ImagingStudy.c", patient="alice"), policy("system/ImagingStudy.rs")):
        with pytest.raises(OperationOutcomeError) as error:
            refused.store_dicom()
        assert error.value.status == 403


def test_deleting_dicom_needs_delete_on_imaging_study_under_a_user_or_system_scope() -> None:
    """And the rights the deletion uses on the FHIR side: delete Media, update the reports and results that
    cite the images (an ImagingStudy-only PACS key does not rewrite clinical reports)."""
    rest = "system/Media.d system/DiagnosticReport.u system/Observation.u"
    policy(f"system/ImagingStudy.d {rest}").delete_dicom()
    policy("user/ImagingStudy.rds user/Media.d user/DiagnosticReport.u user/Observation.u").delete_dicom()
    policy("system/*.cruds").delete_dicom()
    for refused in (
        policy("patient/ImagingStudy.cruds", patient="alice"),
        policy(f"system/ImagingStudy.crus {rest}"),
        policy("system/ImagingStudy.cruds"),
        policy("system/ImagingStudy.d system/Media.d system/DiagnosticReport.u"),
        policy("system/ImagingStudy.d patient/Media.d system/DiagnosticReport.u system/Observation.u", patient="a"),
    ):
        with pytest.raises(OperationOutcomeError) as error:
            refused.delete_dicom()
        assert error.value.status == 403
