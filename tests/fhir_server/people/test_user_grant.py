"""What a person's token carries: the request narrowed by the user's roles and the app's."""

from __future__ import annotations

from fhir_server.people.user_grant import person_grant


def test_a_clinician_asking_for_everything_gets_the_clinician_scopes_in_the_user_context() -> None:
    granted = person_grant("user/*.cruds openid fhirUser offline_access", ("clinician-reviewer",), ("admin",), None)
    text = granted.text.split()
    assert "user/*.rs" in text and "user/Task.cruds" in text and "user/*.cruds" not in text
    assert granted.openid and granted.refresh


def test_the_app_bounds_an_admin_user() -> None:
    granted = person_grant("user/*.cruds", ("admin",), ("clinician-reviewer",), None)
    assert "user/*.cruds" not in granted.text and "user/*.rs" in granted.text.split()


def test_system_roles_act_in_the_user_context() -> None:
    granted = person_grant("system/*.rs user/Patient.rs", ("admin",), ("admin",), None)
    assert granted.text == "user/Patient.rs"


def test_patient_scopes_and_launch_only_with_a_patient_in_context() -> None:
    asked = "launch launch/patient patient/Observation.rs"
    without = person_grant(asked, ("clinician-reviewer",), ("clinician-reviewer",), None)
    assert without.text == ""
    within = person_grant(asked, ("clinician-reviewer",), ("clinician-reviewer",), "pat1")
    assert within.text.split() == ["patient/Observation.rs", "launch", "launch/patient"]
