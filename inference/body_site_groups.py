"""Body-site groups for subgroup analysis (``$ai-performance``): a lesion's location, any of the dozens of
DICOM CID 4029 Dermatology Anatomic Site codes, falls in one of a few groups whose performance can differ
(acral and nail sites, mucosa and genital skin are where dermoscopy models are weakest).

The nail units, mucosa, genital skin and palm come from ``inference.body_regions`` (the regions a card may
exclude); the rest by the DICOM meaning of the code (pydicom's concept dictionary, CID 4029), else by the
coding's own display: head and neck, trunk, upper limb, lower limb. A location with no SNOMED CT coding is
"not recorded"; one that fits no group is "other".
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from inference.body_regions import (
    FEMALE_GENITAL_MUCOSA,
    FEMALE_GENITAL_SKIN,
    MALE_GENITAL_SKIN,
    NAIL_UNITS,
    ORAL_MUCOSA,
    PALM,
)

SNOMED = "http://snomed.info/sct"
NOT_RECORDED, OTHER = "not recorded", "other"
FIXED = {
    **dict.fromkeys(NAIL_UNITS, "nail unit"),
    **dict.fromkeys([*ORAL_MUCOSA, "113277000"], "oral mucosa"),
    **dict.fromkeys([*MALE_GENITAL_SKIN, *FEMALE_GENITAL_SKIN, *FEMALE_GENITAL_MUCOSA, "60944009"], "genital"),
    **dict.fromkeys([*PALM, "70887009"], "palm or sole"),
}
KEYWORDS = (  # words (prefixes at a word boundary); first match wins: a sole of foot is acral, not a lower limb
    ("palm or sole", ("palm", "sole of foot")),
    ("nail unit", ("nail unit",)),
    ("genital", ("genitalia", "perineum", "anus", "penis", "scrotum", "labium", "vulva")),
    (
        "head and neck",
        (
            "scalp",
            "antitragus",
            "postauricular",
            "preauricular",
            "face",
            "forehead",
            "ear",
            "helix",
            "tragus",
            "concha",
            "auricular",
            "auditory",
            "intertragal",
            "nose",
            "nasi",
            "nasolabial",
            "philtrum",
            "lip",
            "perioral",
            "cheek",
            "chin",
            "jawline",
            "eyelid",
            "eyebrow",
            "eye region",
            "canthus",
            "temporal",
            "occipital",
            "parietal",
            "neck",
            "nuchal",
            "submental",
            "submandibular",
            "head",
        ),
    ),
    (
        "upper limb",
        ("upper arm", "forearm", "elbow", "antecubital", "wrist", "hand", "axilla", "upper extremity", "arm"),
    ),
    ("lower limb", ("thigh", "knee", "popliteal", "leg", "ankle", "heel", "foot", "toe", "lower extremity")),
    (
        "trunk",
        (
            "back",
            "chest",
            "thora",
            "abdomen",
            "trunk",
            "umbilicus",
            "epigastric",
            "hypogastric",
            "areola",
            "nipple",
            "buttock",
            "gluteal",
            "inguinal",
            "groin",
            "sternal",
            "infraclavicular",
        ),
    ),
)


def _by_words(meaning: str) -> str:
    words = meaning.lower()
    return next((group for group, keys in KEYWORDS if any(re.search(rf"\b{k}", words) for k in keys)), OTHER)


@cache
def _dicom_meanings() -> dict[str, str]:
    """SNOMED CT code -> meaning for CID 4029 (Dermatology Anatomic Site), from pydicom."""
    from pydicom.sr._cid_dict import cid_concepts
    from pydicom.sr._concepts_dict import concepts

    found: dict[str, str] = {}
    sct: dict[str, dict[str, tuple[str, list[int]]]] = concepts["SCT"]  # type: ignore[assignment]
    for keyword in cid_concepts[4029].get("SCT", []):
        for code, (meaning, _cids) in sct[keyword].items():
            found[code] = meaning
    return found


def site_group(location: dict[str, Any] | None) -> str:
    """The body-site group of a lesion's ``BodyStructure.location``."""
    codings = [c for c in (location or {}).get("coding") or [] if isinstance(c, dict) and c.get("system") == SNOMED]
    if not codings:
        return NOT_RECORDED
    code = str(codings[0].get("code", ""))
    if code in FIXED:
        return FIXED[code]
    meaning = _dicom_meanings().get(code) or str(codings[0].get("display") or (location or {}).get("text") or "")
    return _by_words(meaning)
