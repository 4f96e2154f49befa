"""Contraindicated body regions match by hierarchy (inference.body_regions): a sub-region a device
codes from DICOM CID 4029 (a thumb's nail unit, lip mucosa, a genital sub-region, part of the palm)
is refused like the region the card excludes, with the coded "unsuitable image" reason."""

from __future__ import annotations

import pydicom.sr._concepts_dict as dicom_concepts
import pytest

from inference.accepted_inputs import AcceptedInputs
from inference.admission import check_attributes
from inference.body_regions import WITHIN, excluding
from inference.demo import ACCEPTS
from tests.dicom_factories import dermoscopic

NOT_IN_DICOM = {"770802007"}  # Nail unit structure: the SNOMED CT parent of CID 4029's nail units


def dicom_meanings() -> dict[str, set[str]]:
    """Every SNOMED CT code of the DICOM context groups (PS3.16, as pydicom ships them) and its meanings."""
    meanings: dict[str, set[str]] = {}
    for by_code in dicom_concepts.concepts["SCT"].values():
        for code, (meaning, _) in by_code.items():
            meanings.setdefault(code, set()).add(meaning)
    return meanings


def test_every_code_of_the_table_is_a_dicom_region_with_its_meaning() -> None:
    known = dicom_meanings()
    for region, (meaning, parts) in WITHIN.items():
        for code, name in [(region, meaning), *parts.items()]:
            if code in NOT_IN_DICOM:
                continue
            assert code in known, code
            assert any(name.lower() in m.lower() for m in known[code]), (code, name, known[code])


def region(code: str) -> object:
    ds = dermoscopic()
    ds.Rows = ds.Columns = 256
    ds.AnatomicRegionSequence[0].CodeValue = code
    return ds


@pytest.mark.parametrize(
    ("code", "within"),
    [
        ("770810008", "770802007 Nail unit structure"),  # Nail unit of thumb
        ("770822006", "770802007 Nail unit structure"),  # Nail unit of great toe
        ("46353006", "113277000 Oral mucosa"),  # Mucosa of lower lip
        ("7991003", "60944009 Skin of external genitalia"),  # Skin of glans penis
        ("23213005", "86969008 Female external genitalia structure"),  # Vulval vestibule
        ("26795005", "70887009 Skin of palm of hand"),  # Skin of thenar region of palm
    ],
)
def test_a_sub_region_of_a_contraindicated_region_is_refused(code: str, within: str) -> None:
    [problem] = check_attributes(region(code), ACCEPTS)  # type: ignore[arg-type]
    assert problem.code == "body-region"
    assert f"SNOMED CT {code} " in problem.detail and f"lies within {within}" in problem.detail
    concept = problem.concept()
    assert concept["coding"][0] == {"system": "urn:dermbridge:image-admission", "code": "body-region",
                                    "display": "The imaged body region is not one the model accepts"}  # fmt: skip


def test_the_region_itself_and_ordinary_skin() -> None:
    [problem] = check_attributes(region("770802007"), ACCEPTS)  # type: ignore[arg-type]
    assert problem.detail == "SNOMED CT 770802007 Nail unit structure is contraindicated for the model"
    for skin in ("39937001", "699909001", "33712006"):  # skin; skin of the lateral heel; skin of hand
        assert check_attributes(region(skin), ACCEPTS) == [], skin  # type: ignore[arg-type]
    assert excluding("16251004", ACCEPTS.excluded_body_regions) == "48477009"  # skin of upper lip: the lip


def test_a_card_that_takes_a_region_takes_its_sub_regions() -> None:
    nails = AcceptedInputs(body_regions=("770802007",))
    assert check_attributes(region("770817006"), nails) == []  # type: ignore[arg-type]  # ring finger's nail
    [problem] = check_attributes(region("39937001"), nails)  # type: ignore[arg-type]
    assert problem.code == "body-region" and "not a region the model takes" in problem.detail
