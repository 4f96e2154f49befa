"""The case's lesions on a body map (pure functions: no I/O): front and back outlines drawn by the page
(an inline SVG of our own, no external asset), one numbered marker per lesion.

A lesion's place comes only from its ``BodyStructure.location`` SNOMED CT code (DICOM CID 4029 Dermatology
Anatomic Site codes, the ones the clinic's devices send) and, for a limb, its ``locationQualifier`` laterality.
A code not in ``SITES``, a location without SNOMED CT coding, or a limb without a side is listed beside the
map with its recorded words, never placed by a guess.
"""

from __future__ import annotations

from dataclasses import dataclass

from fhir_server.reviewer_app.case_view import Resource, text_of

SNOMED = "http://snomed.info/sct"
LEFT, RIGHT = "7771000", "24028007"  # SNOMED CT Left / Right (qualifier value)
FRONT, BACK = "front", "back"
VIEW_OFFSET = {FRONT: 0, BACK: 140}  # the back outline is drawn 140 units right of the front one
CENTRE_X = 60

# SNOMED CT code -> (region, view). Codes from DICOM CID 4029 (checked against pydicom's CID 4029 table).
SITES: dict[str, tuple[str, str]] = {
    **dict.fromkeys(("70762009", "73897004", "68698007", "110488009"), ("head", FRONT)),  # head, face, forehead...
    **dict.fromkeys(("43067004", "61719002"), ("head", BACK)),  # scalp, vertex of scalp
    **dict.fromkeys(("43081002", "11584001", "5272005", "76072005", "182329002"), ("neck", FRONT)),
    **dict.fromkeys(("244106003", "699915001", "181491009", "54440003"), ("chest", FRONT)),
    **dict.fromkeys(("75093004", "699935000", "699914002"), ("abdomen", FRONT)),
    **dict.fromkeys(("66643007", "699893008", "244111001"), ("upper back", BACK)),
    "113182001": ("lower back", BACK),
    "22180002": ("buttock", BACK),
    **dict.fromkeys(("45981001", "70559009", "33712006", "70887009", "244169007"), ("arm", FRONT)),
    **dict.fromkeys(("72939005", "41550009", "181536004", "281642007"), ("arm", BACK)),
    **dict.fromkeys(("61248009", "73958006", "181553006", "25763004", "60496002"), ("leg", FRONT)),
    **dict.fromkeys(("4578000", "47224004", "35739000", "52953006"), ("leg", BACK)),
}
TRUNK_Y = {"head": 22, "neck": 41, "chest": 72, "abdomen": 118, "upper back": 72, "lower back": 115, "buttock": 138}
LIMB = {"arm": (33, 95), "leg": (14, 210)}  # distance of the limb's middle from the body's centre line; height
LIMBS = tuple(LIMB)


@dataclass(frozen=True, slots=True)
class Marker:
    number: int
    label: str
    x: int
    y: int


@dataclass(frozen=True, slots=True)
class Unplaced:
    number: int
    label: str
    why: str


@dataclass
class BodyMap:
    markers: list[Marker]
    unplaced: list[Unplaced]
    numbers: dict[str, int]  # BodyStructure reference -> its number on the map and in the lesion headings


def _snomed_code(concept: Resource | None) -> str:
    codings = (concept or {}).get("coding") or []
    return next((str(c.get("code") or "") for c in codings if c.get("system") == SNOMED), "")


def _side(structure: Resource) -> str:
    codes = {_snomed_code(q) for q in structure.get("locationQualifier") or []}
    return LEFT if LEFT in codes and RIGHT not in codes else RIGHT if RIGHT in codes and LEFT not in codes else ""


def place(structure: Resource) -> tuple[int, int] | str:
    """The point on the map of a lesion's location, or why it is not placed."""
    code = _snomed_code(structure.get("location"))
    if not code:
        return "no SNOMED CT body site recorded"
    if code not in SITES:
        return f"body site {code} is not on the map"
    region, view = SITES[code]
    centre = VIEW_OFFSET[view] + CENTRE_X
    if region not in LIMBS:
        return centre, TRUNK_Y[region]
    side = _side(structure)
    if not side:
        return f"{region}: side (left or right) not recorded"
    offset, y = LIMB[region]
    # Front view: the patient faces the reader, so their left is on the reader's right; back view: the same side.
    toward_reader_right = (side == LEFT) == (view == FRONT)
    return centre + (offset if toward_reader_right else -offset), y


def body_map(structures: list[Resource], labels: dict[str, str]) -> BodyMap:
    """Markers numbered in the order of ``structures`` (the order the page lists the lesions)."""
    markers: list[Marker] = []
    unplaced: list[Unplaced] = []
    taken: dict[tuple[int, int], int] = {}
    numbers = {f"BodyStructure/{s.get('id')}": n for n, s in enumerate(structures, start=1)}
    for number, structure in enumerate(structures, start=1):
        label = labels.get(f"BodyStructure/{structure.get('id')}") or text_of(structure.get("location")) or "Lesion"
        where = place(structure)
        if isinstance(where, str):
            unplaced.append(Unplaced(number, label, where))
            continue
        nth = taken.get(where, 0)
        taken[where] = nth + 1
        markers.append(Marker(number, label, where[0] + 9 * nth, where[1] + 9 * nth))  # several on one site
    return BodyMap(markers, unplaced, numbers)
