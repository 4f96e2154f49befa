"""Examples get stable ids: each example ``{profile id}-example``, other referenced resources ``{type}-{n}``,
references (versioned ones too) follow, and ``meta`` keeps the package's own profiles, security and tags."""

from __future__ import annotations

from conformance.ig.stable_ids import stable_ids

CANONICAL = "https://dermbridge.org/fhir"
LESION = f"{CANONICAL}/StructureDefinition/dermbridge-lesion"
FINDING = f"{CANONICAL}/StructureDefinition/dermbridge-clinician-finding"
FOREIGN = "http://hl7.org/fhir/uv/aitransparency/StructureDefinition/AI-Provenance"


def test_ids_and_references_are_stable() -> None:
    lesion = {"resourceType": "BodyStructure", "id": "3f1c", "meta": {"profile": [LESION], "versionId": "4"},
              "patient": {"reference": "Patient/a1"}}  # fmt: skip
    finding = {
        "resourceType": "Observation",
        "id": "77aa",
        "meta": {"profile": [FINDING, FOREIGN], "lastUpdated": "2026-11-30T22:00:00Z", "security": [{"code": "X"}]},
        "subject": {"reference": "Patient/a1"},
        "focus": [{"reference": "BodyStructure/3f1c"}],
        "performer": [{"reference": "Practitioner/p9", "display": "Dana"}, {"reference": "Practitioner/p8"}],
        "derivedFrom": [{"reference": "Observation/77aa/_history/2"}, {"reference": "urn:uuid:1234"}],
    }
    shown = stable_ids([lesion, finding], CANONICAL)
    assert [r["id"] for r in shown] == ["dermbridge-lesion-example", "dermbridge-clinician-finding-example"]
    assert shown[0]["meta"] == {"profile": [LESION]} and shown[0]["patient"] == {"reference": "Patient/patient-1"}
    observation = shown[1]
    assert observation["meta"] == {"security": [{"code": "X"}], "profile": [FINDING]}  # not the unknown profile
    assert observation["subject"] == {"reference": "Patient/patient-1"}
    assert observation["focus"] == [{"reference": "BodyStructure/dermbridge-lesion-example"}]
    assert [p["reference"] for p in observation["performer"]] == [
        "Practitioner/practitioner-1",
        "Practitioner/practitioner-2",
    ]
    assert observation["derivedFrom"] == [
        {"reference": "Observation/dermbridge-clinician-finding-example/_history/2"},
        {"reference": "urn:uuid:1234"},
    ]
    assert finding["id"] == "77aa" and finding["subject"] == {"reference": "Patient/a1"}  # the input is not changed
