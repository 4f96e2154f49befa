"""DermBridge's StructureDefinitions: valid R4 resources, under one canonical base, each differential
element present in the generated snapshot with its constraints."""

from __future__ import annotations

from typing import Any

import pytest

from conformance.profiles import all_profiles, all_value_sets
from fhir_server.declared_profiles import STRUCTURE_DEFINITION
from fhir_server.validation import validate

PROFILES = {p["id"]: p for p in all_profiles()}


def _snapshot(profile: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["id"]: e for e in profile["snapshot"]["element"]}


@pytest.mark.parametrize("profile_id", sorted(PROFILES))
def test_profile_is_a_valid_structure_definition_with_its_differential_in_the_snapshot(profile_id: str) -> None:
    profile = PROFILES[profile_id]
    validate(profile, "StructureDefinition")
    assert profile["url"] == f"{STRUCTURE_DEFINITION}/{profile_id}"
    ids = [e["id"] for e in profile["snapshot"]["element"]]
    assert len(ids) == len(set(ids)), "element ids are unique"
    snapshot = _snapshot(profile)
    for element in profile["differential"]["element"]:
        generated = snapshot[element["id"]]
        for key, value in element.items():
            if key == "constraint":
                assert all(c in generated["constraint"] for c in [{**c, "source": profile["url"]} for c in value])
            else:
                assert generated[key] == value, f"{element['id']}.{key}"


def test_a_slice_follows_its_sliced_element_and_its_children() -> None:
    ids = [e["id"] for e in PROFILES["dermbridge-ai-risk-result"]["snapshot"]["element"]]
    sliced, first_slice = ids.index("Observation.component"), ids.index("Observation.component:threshold")
    assert ids[sliced + 1 : first_slice] == [i for i in ids if i.startswith("Observation.component.")]
    assert ids[first_slice + 1].startswith("Observation.component:threshold.")


def test_the_base_keeps_what_the_differential_does_not_name() -> None:
    snapshot = _snapshot(PROFILES["dermbridge-case-report"])
    assert snapshot["DiagnosticReport.status"]["min"] == 1
    assert snapshot["DiagnosticReport.status"]["binding"]["strength"] == "required"
    assert snapshot["DiagnosticReport.subject"]["min"] == 1  # 0..1 in R4, 1..1 here


def test_the_profile_value_sets_are_valid() -> None:
    for value_set in all_value_sets():
        validate(value_set, "ValueSet")
