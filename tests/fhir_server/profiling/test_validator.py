"""The snapshot walker on its own (fhir_server.profiling.validator), with a profile made for the test:
closed slicing, a required binding to a shipped R4 value set, and a value set the server does not hold."""

from __future__ import annotations

import asyncio
from typing import Any

from conformance.profiles.builder import element, profile, sliced
from fhir_server.declared_profiles import STRUCTURE_DEFINITION
from fhir_server.profiling.structure import Structure
from fhir_server.profiling.validator import check
from terminology.content import base_content

CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
STRUCTURE = Structure(
    profile(
        f"{STRUCTURE_DEFINITION}/test-closed",
        "Observation",
        "Test",
        "Closed category slicing and required bindings.",
        [
            sliced("Observation.category", "pattern", "$this", rules="closed"),
            element("Observation.category:imaging", patternCodeableConcept={"coding": [{"system": CATEGORY,
                                                                                        "code": "imaging"}]}),
            element("Observation.code", binding={"strength": "required",
                                                 "valueSet": "http://hl7.org/fhir/ValueSet/observation-status"}),
            element("Observation.method", binding={"strength": "required", "valueSet": "urn:example:nowhere"}),
        ],
    )
)  # fmt: skip


def observation(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "code": {"coding": [{"code": "final"}]}, **extra}


def run(resource: dict[str, Any]) -> list[dict[str, Any]]:
    return asyncio.run(check(STRUCTURE, resource, base_content()))


def test_a_value_outside_a_closed_slicing_is_an_error() -> None:
    imaging = {"coding": [{"system": CATEGORY, "code": "imaging"}]}
    assert run(observation(category=[imaging])) == []
    issues = run(observation(category=[imaging, {"text": "other"}]))
    assert [(i["expression"], "closed" in i["diagnostics"]) for i in issues] == [(["Observation.category[1]"], True)]


def test_a_required_binding_is_checked_through_the_terminology_service() -> None:
    issues = run(observation(code={"coding": [{"system": "http://hl7.org/fhir/observation-status", "code": "nope"}]}))
    assert [(i["code"], i["expression"]) for i in issues] == [("code-invalid", ["Observation.code"])]


def test_a_value_set_the_service_does_not_hold_is_a_warning() -> None:
    (issue,) = run(observation(method={"text": "by eye"}))
    assert issue["severity"] == "warning" and "urn:example:nowhere" in issue["diagnostics"]


def test_the_wrong_resource_type_is_reported() -> None:
    (issue,) = run({"resourceType": "Patient"})
    assert issue["expression"] == ["resourceType"]


def test_a_primitive_with_only_an_extension_is_present() -> None:
    absent = {
        "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "unknown"}]
    }
    resource = {key: value for key, value in observation().items() if key != "status"}
    assert run({**resource, "_status": absent}) == []
    assert [i["expression"] for i in run(resource)] == [["Observation.status"]]
