"""Body-site groups: every CID 4029 site falls in a group by its meaning, excluded regions by their tables."""

from __future__ import annotations

import pytest

from inference.body_site_groups import site_group

SNOMED = "http://snomed.info/sct"


@pytest.mark.parametrize(
    ("code", "group"),
    [
        ("66643007", "trunk"),  # Skin of back
        ("25763004", "lower limb"),  # Skin of anterior surface of lower leg ("surface" is not a face)
        ("36141000", "head and neck"),  # Skin of cheek
        ("70559009", "upper limb"),  # Skin of anterior surface of forearm
        ("35739000", "palm or sole"),  # Skin of lateral border of sole of foot
        ("770810008", "nail unit"),  # Nail unit of thumb
        ("46353006", "oral mucosa"),  # Mucosa of lower lip
        ("7991003", "genital"),  # Skin of glans penis
    ],
)
def test_dicom_sites_fall_in_their_group(code: str, group: str) -> None:
    assert site_group({"coding": [{"system": SNOMED, "code": code}]}) == group


def test_other_codes_by_their_display_and_nothing_is_not_recorded() -> None:
    assert site_group({"coding": [{"system": SNOMED, "code": "22943007", "display": "Trunk structure"}]}) == "trunk"
    assert site_group({"text": "back"}) == "not recorded"
    assert site_group(None) == "not recorded"
