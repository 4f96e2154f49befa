"""The dermoscopy ABCD rule's result as the case view shows it (pure functions: no I/O).

The rule-based analyser (``inference.explanations.write_abcd``) writes one Observation per image, coded
``urn:dermbridge:abcd|abc-partial``, its ``device`` the rule's own software Device. Its components carry A, B
and C, D as not assessed, the partial score, the range of the Total Dermoscopy Score (TDS) possible for any D,
and Stolz's published cut-off band (4.75 / 5.45) only when every D leads to it. The page lists each component
in the analyser's own words, under a heading saying it was computed by software and is a scoring aid, not a
diagnosis, with the rule's note: no value is reworded into a finding about the lesion.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fhir_server.reviewer_app.case_view import Resource, coded, quantity, text_of

ABCD = ("urn:dermbridge:abcd", "abc-partial")
NOT_ASSESSED = "not assessed"


@dataclass
class AbcdResult:
    """One ABCD Observation: who computed it, its lines (what, value) and the analyser's note."""

    lesion: str  # the BodyStructure reference (the Observation's focus), or ""
    device: str
    lines: list[tuple[str, str]] = field(default_factory=list)
    note: str = ""


def is_abcd(observation: Resource) -> bool:
    return coded(observation.get("code"), *ABCD)


def _value(component: Resource) -> str:
    if "valueInteger" in component:
        return str(component["valueInteger"])
    if "valueString" in component:
        return str(component["valueString"])
    if "valueQuantity" in component:
        unit = str(component["valueQuantity"].get("unit") or "")
        return f"{quantity(component['valueQuantity'])} {unit if unit != '1' else ''}".strip()
    if "valueRange" in component:
        low, high = component["valueRange"].get("low"), component["valueRange"].get("high")
        return f"{quantity(low)} to {quantity(high)}"
    if "valueCodeableConcept" in component:
        return text_of(component["valueCodeableConcept"])
    return NOT_ASSESSED if "dataAbsentReason" in component else ""


def abcd_result(observation: Resource) -> AbcdResult:
    focus = (observation.get("focus") or [{}])[0]
    notes = " ".join(str(n.get("text") or "") for n in observation.get("note") or [] if "TDS" in str(n.get("text")))
    return AbcdResult(
        lesion=str(focus.get("reference") or ""),
        device=str((observation.get("device") or {}).get("display") or "software"),
        lines=[(text_of(c.get("code")), _value(c)) for c in observation.get("component") or []],
        note=notes,
    )


def abcd_by_lesion(observations: list[Resource]) -> dict[str, list[AbcdResult]]:
    """The ABCD results of a case, by lesion reference."""
    found: dict[str, list[AbcdResult]] = {}
    for observation in observations:
        if is_abcd(observation):
            result = abcd_result(observation)
            found.setdefault(result.lesion, []).append(result)
    return found
