"""Body regions a model card excludes, matched by hierarchy, not by exact code.

A card names a contraindicated region by its SNOMED CT concept (e.g. 770802007 |Nail unit structure|);
a device codes the image's Anatomic Region Sequence (0008,2218) with whatever the DICOM context groups
offer, often a more specific part (770810008 |Nail unit of thumb|, CID 4029 Dermatology Anatomic Site).
``WITHIN`` lists, for each region a card may exclude, the DICOM region codes that lie within it
(SNOMED CT is-a or part-of), so a sub-region is refused like its region.

Vendored by hand (reviewed 2026-11-30) from DICOM PS3.16 CID 4029 (Dermatology Anatomic Site), CID 4028
(Craniofacial Anatomic Region), CID 4031 (Common Anatomic Region) and CID 4 (Anatomic Region), as
shipped in pydicom 3.0's concept dictionary (``pydicom.sr``): every code and meaning below is a DICOM
one, which ``tests/inference/test_body_regions.py`` checks against pydicom. 770802007 |Nail unit
structure (body structure)| is not in a DICOM CID; it is the SNOMED CT parent of the nail units.
A region not listed is matched by its own code only.
"""

from __future__ import annotations

from collections.abc import Iterable

NAIL_UNITS = {
    "770809003": "Nail unit of finger", "770810008": "Nail unit of thumb", "770815003": "Nail unit of index finger",
    "770816002": "Nail unit of middle finger", "770817006": "Nail unit of ring finger",
    "770818001": "Nail unit of little finger", "770805009": "Nail unit of toe", "770822006": "Nail unit of great toe",
    "770823001": "Nail unit of second toe", "770825008": "Nail unit of third toe",
    "770821004": "Nail unit of fourth toe", "770820003": "Nail unit of fifth toe",
}  # fmt: skip
LIP_MUCOSA = {"18444004": "Mucosa of upper lip", "46353006": "Mucosa of lower lip"}
ORAL_MUCOSA = {
    **LIP_MUCOSA, "36152006": "Mucosa of floor of mouth", "245823002": "Mucosa of mandibular gingiva",
    "245814000": "Mucosa of maxillary gingiva", "8001006": "Mucosa of tongue", "245831007": "Mucosa of tip of tongue",
}  # fmt: skip
MALE_GENITAL_SKIN = {
    "35900000": "Skin of penis", "7991003": "Skin of glans penis", "244117002": "Skin of root of penis",
    "244118007": "Skin of shaft of penis", "81992007": "Skin of scrotum",
}  # fmt: skip
FEMALE_GENITAL_SKIN = {
    "73058008": "Skin of labium", "128252004": "Skin of labium majus", "128253009": "Skin of labium minus",
    "29353003": "Skin of clitoris", "76723005": "Skin of prepuce of clitoris",
}  # fmt: skip
FEMALE_GENITAL_MUCOSA = {
    "23213005": "Vulval vestibule", "18857001": "Vaginal introitus", "279867004": "Frenulum of labia minora",
    "4019005": "Posterior commissure of labium majorum",
}  # fmt: skip
PALM = {"26795005": "Skin of thenar region of palm", "89784008": "Skin of hypothenar region of palm"}

# region a card may exclude -> (its meaning, the DICOM region codes within it)
WITHIN: dict[str, tuple[str, dict[str, str]]] = {
    "770802007": ("Nail unit structure", NAIL_UNITS),
    "113277000": ("Oral mucosa", ORAL_MUCOSA),
    "123851003": ("Mouth", {"113277000": "Oral mucosa", **ORAL_MUCOSA}),
    "48477009": ("Lip", {**LIP_MUCOSA, "88089004": "Skin of lip", "16251004": "Skin of upper lip",
                         "66934001": "Skin of lower lip"}),
    "60944009": ("Skin of external genitalia", {**MALE_GENITAL_SKIN, **FEMALE_GENITAL_SKIN}),
    "90418005": ("Male external genitalia", {"18911002": "Penis", "20233005": "Scrotal structure",
                                             **MALE_GENITAL_SKIN}),
    "86969008": ("Female external genitalia structure", {"45292006": "Vulva", **FEMALE_GENITAL_SKIN,
                                                         **FEMALE_GENITAL_MUCOSA}),
    "45292006": ("Vulva", {**FEMALE_GENITAL_SKIN, **FEMALE_GENITAL_MUCOSA}),
    "18911002": ("Penis", {k: v for k, v in MALE_GENITAL_SKIN.items() if k != "81992007"}),
    "70887009": ("Skin of palm of hand", PALM),
}  # fmt: skip


def excluding(region: str, excluded: Iterable[str]) -> str | None:
    """The excluded region that ``region`` is or lies within, or None."""
    for code in excluded:
        if region == code or region in WITHIN.get(code, ("", {}))[1]:
            return code
    return None


def meaning(code: str) -> str:
    """A region code's DICOM meaning, when this table knows it."""
    if code in WITHIN:
        return WITHIN[code][0]
    return next((parts[code] for _, parts in WITHIN.values() if code in parts), "")
