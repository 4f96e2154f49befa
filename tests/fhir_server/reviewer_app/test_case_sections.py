"""The case view's extra sections read from FHIR resources: the body map, the dermoscopy ABCD results, earlier
visits of the same lesion and the case history (``fhir_server.reviewer_app`` pure modules)."""

from __future__ import annotations

from typing import Any

from fhir_server.reviewer_app.body_map import LEFT, RIGHT, body_map
from fhir_server.reviewer_app.case_history import agents_named, history
from fhir_server.reviewer_app.dermoscopy import NOT_ASSESSED, abcd_by_lesion
from fhir_server.reviewer_app.earlier_visits import earlier_visits
from inference.abcd import DermoscopyAbcd
from inference.explanations import ABCD_NOTE, abcd_components

SNOMED = "http://snomed.info/sct"
PATIENT, OTHER = "Patient/p1", "Patient/p2"
LESION = "BodyStructure/b1"


def _structure(id: str, code: str | None, side: str | None = None, text: str = "") -> dict[str, Any]:
    structure: dict[str, Any] = {"resourceType": "BodyStructure", "id": id, "patient": {"reference": PATIENT}}
    if code is not None:
        structure["location"] = {"coding": [{"system": SNOMED, "code": code}], "text": text}
    else:
        structure["location"] = {"text": text}
    if side:
        structure["locationQualifier"] = [{"coding": [{"system": SNOMED, "code": side}]}]
    return structure


def test_the_body_map_places_coded_sites_and_lists_the_rest() -> None:
    structures = [
        _structure("back", "66643007", text="Skin of back"),
        _structure("left-arm", "45981001", LEFT, text="Left upper arm"),
        _structure("right-arm", "45981001", RIGHT, text="Right upper arm"),
        _structure("arm", "45981001", text="Upper arm"),  # no side: not guessed
        _structure("odd", "12345678", text="Somewhere"),  # not a site of the map
        _structure("words", None, text="Left calf"),  # words only
    ]
    labels = {f"BodyStructure/{s['id']}": str(s["location"]["text"]) for s in structures}
    drawn = body_map(structures, labels)
    places = {m.label: (m.x, m.y) for m in drawn.markers}
    assert places["Skin of back"][0] > 140  # drawn on the back outline
    assert (
        places["Left upper arm"][0] > 60 > places["Right upper arm"][0]
    )  # front view: the patient's left on the right
    assert [(u.number, u.why) for u in drawn.unplaced] == [
        (4, "arm: side (left or right) not recorded"),
        (5, "body site 12345678 is not on the map"),
        (6, "no SNOMED CT body site recorded"),
    ]
    assert drawn.numbers["BodyStructure/back"] == 1


def test_the_abcd_panel_keeps_the_analysers_words_and_shows_d_as_not_assessed() -> None:
    abcd = DermoscopyAbcd(asymmetry=2, border=6, colours=("dark brown", "blue-grey", "black"), diameter_px=120.0,
                          diameter_mm=None, area_fraction=0.2)  # fmt: skip
    observation = {"resourceType": "Observation", "id": "a1", "focus": [{"reference": LESION}],
                   "code": {"coding": [{"system": "urn:dermbridge:abcd", "code": "abc-partial"}]},
                   "device": {"reference": "Device/d", "display": "DermBridge dermoscopy ABCD rule (Stolz)"},
                   "component": abcd_components(abcd), "note": [{"text": ABCD_NOTE}]}  # fmt: skip
    (result,) = abcd_by_lesion([observation])[LESION]
    lines = dict(result.lines)
    assert lines["A: asymmetry, axes of asymmetry in contour or colour (0-2)"] == "2"
    assert lines["D: differential structures (1-5): not assessed by this software"] == NOT_ASSESSED
    assert lines["Total Dermoscopy Score possible for D from 1 to 5"] == "5.2 to 7.2"
    band = next(k for k in lines if k.startswith("Stolz TDS cut-off band"))
    assert "4.75 / 5.45" in band and lines[band] == NOT_ASSESSED  # the range spans two bands: it depends on D
    assert "Not a Total Dermoscopy Score" in result.note and "DermBridge dermoscopy ABCD rule" in result.device
    every_colour = DermoscopyAbcd(2, 8, ("light brown", "dark brown", "black", "red", "white", "blue-grey"), 120.0,
                                  None, 0.2)  # fmt: skip
    (high,) = abcd_by_lesion([{**observation, "component": abcd_components(every_colour)}])[LESION]
    bands = [v for k, v in high.lines if k.startswith("Stolz TDS cut-off band")]
    assert bands == ["TDS above 5.45 for any D (not a diagnosis: a dermoscopy scoring aid, not validated here)"]


def _observation(id: str, subject: str, media: str, when: str, focus: str = LESION) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": id, "subject": {"reference": subject}, "focus": [{"reference": focus}],
            "effectiveDateTime": when, "derivedFrom": [{"reference": f"Media/{media}"}]}  # fmt: skip


def _media(id: str, subject: str) -> dict[str, Any]:
    return {"resourceType": "Media", "id": id, "subject": {"reference": subject},
            "content": {"url": f"/dicomweb/default/studies/1/series/2/instances/{id}/rendered"}}  # fmt: skip


def test_earlier_visits_are_the_same_lesion_of_the_same_patient_from_other_reports() -> None:
    observations = [
        _observation("now", PATIENT, "m-now", "2026-11-30T10:00:00Z"),  # this report's own
        _observation("before", PATIENT, "m-before", "2025-06-01T10:00:00Z"),
        _observation("older", PATIENT, "m-older", "2024-06-01T10:00:00Z"),
        _observation("stranger", OTHER, "m-stranger", "2025-01-01T10:00:00Z"),  # another patient's
        _observation("elsewhere", PATIENT, "m-elsewhere", "2025-02-01T10:00:00Z", focus="BodyStructure/b2"),
        _observation("mislinked", PATIENT, "m-other-patient", "2025-03-01T10:00:00Z"),  # its Media is not theirs
    ]
    owners = {"m-now": PATIENT, "m-before": PATIENT, "m-older": PATIENT, "m-stranger": OTHER,
              "m-elsewhere": PATIENT, "m-other-patient": OTHER}  # fmt: skip
    media = {id: _media(id, subject) for id, subject in owners.items()}
    visits = earlier_visits(LESION, PATIENT, {"Observation/now"}, observations, media, {})
    assert [(v.when, [i.media_id for i in v.images]) for v in visits] == [
        ("2024-06-01", ["m-older"]),
        ("2025-06-01", ["m-before"]),
    ]


def test_the_case_history_says_who_did_what_when_and_leaves_reads_out() -> None:
    provenance = {"resourceType": "Provenance", "recorded": "2026-11-30T10:00:05Z",
                  "target": [{"reference": "Observation/o1"}], "activity": {"text": "AI lesion classification"},
                  "agent": [{"who": {"reference": "Device/d1"}}]}  # fmt: skip
    claimed = {"resourceType": "AuditEvent", "recorded": "2026-11-30T11:00:00Z", "action": "E", "outcome": "0",
               "subtype": [{"code": "operation", "display": "$claim"}],
               "agent": [{"who": {"reference": "Practitioner/ada"}, "requestor": True}, {"who": {"display": "web"}}],
               "entity": [{"what": {"reference": "Task/t1"}}]}  # fmt: skip
    read = {**claimed, "action": "R", "recorded": "2026-11-30T11:01:00Z"}
    refused = {**claimed, "outcome": "4", "recorded": "2026-11-30T11:02:00Z",
               "agent": [{"who": {"reference": "Practitioner/ben"}, "requestor": True}]}  # fmt: skip
    names = agents_named([
        {"resourceType": "Practitioner", "id": "ada", "name": [{"text": "Dr Ada"}]},
        {"resourceType": "Device", "id": "d1", "deviceName": [{"name": "Lesion classifier"}]},
    ])  # fmt: skip
    entries = history([provenance], [claimed, read, refused], names)
    assert [(e.when, e.who, e.what, e.outcome) for e in entries] == [
        ("2026-11-30 10:00", "Lesion classifier (software)", "AI lesion classification (Observation)", ""),
        ("2026-11-30 11:00", "Dr Ada", "$claim Task", ""),
        ("2026-11-30 11:02", "Practitioner/ben", "$claim Task", "refused"),
    ]
