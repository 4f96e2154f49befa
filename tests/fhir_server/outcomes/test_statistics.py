"""The pure parts: the Wilson interval against published values, the categories of diagnoses, the Fitzpatrick
codes against DICOM CID 4401, and which card entries are claims."""

from __future__ import annotations

import pytest
from pydicom.sr.codedict import codes

from fhir_server.outcomes.claims import claim_of
from fhir_server.outcomes.codes import FITZPATRICK_VALUES, NCIT, SNOMED, category, fitzpatrick_type
from fhir_server.outcomes.dataset import age_band
from fhir_server.outcomes.wilson import proportion


@pytest.mark.parametrize(
    ("successes", "n", "lower", "upper"),
    [
        (4, 5, 0.3755, 0.9638),
        (5, 7, 0.3589, 0.9178),
        (0, 10, 0.0, 0.2775),
        (10, 10, 0.7225, 1.0),
        (81, 263, 0.2553, 0.3662),
    ],
)
def test_wilson_interval(successes: int, n: int, lower: float, upper: float) -> None:
    # 81/263: Newcombe (1998) table I, 0.2553-0.3662
    found = proportion(successes, n)
    assert found is not None
    assert tuple(round(x, 4) for x in found.interval) == (lower, upper)


def test_no_denominator_no_estimate() -> None:
    assert proportion(0, 0) is None
    with pytest.raises(ValueError):
        proportion(3, 2)


def test_categories_never_guess() -> None:
    melanoma_in_situ = {"coding": [{"system": SNOMED, "code": "189758001"}]}
    assert category([melanoma_in_situ]) == "melanoma"
    assert category([{"coding": [{"system": SNOMED, "code": "400096001"}]}]) == "other"
    assert category([{"coding": [{"system": SNOMED, "code": "42425007"}]}]) is None  # Equivocal: unclassified
    assert category([{"text": "melanoma"}]) is None
    both = [{"coding": [{"system": SNOMED, "code": "254701007"}]}, melanoma_in_situ]
    assert category(both) == "melanoma"  # the most concerning decides


def test_fitzpatrick_codes_are_cid_4401_and_snomed_phototypes() -> None:
    cid = codes.cid4401
    for roman in ("I", "II", "III", "IV", "V", "VI"):
        code = getattr(cid, f"FitzpatrickSkinType{roman}")
        assert fitzpatrick_type({"coding": [{"system": NCIT, "code": code.value}]}) == roman
    assert sorted(v for (system, _), v in FITZPATRICK_VALUES.items() if system == SNOMED) == sorted(
        ["I", "II", "III", "IV", "V", "VI"]
    )


def test_age_bands_need_a_whole_birth_date() -> None:
    assert age_band("1970-05-02", "2026-05-01T10:00:00+01:00") == "40-59"
    assert age_band("1970-05-02", "2030-05-02") == "60-79"
    assert age_band("1970", "2026-05-01") == "not recorded"


def test_only_sensitivity_and_specificity_for_a_target_condition_are_claims() -> None:
    claim = claim_of({"subgroup": "Fitzpatrick V-VI", "metric": "sensitivity", "condition": "melanoma", "value": 0.85,
                      "stratum": {"fitzpatrick": ["V", "VI"]}})  # fmt: skip
    assert claim is not None and (claim.dimension, claim.values) == ("fitzpatrick", ("V", "VI"))
    assert claim_of({"metric": "accuracy", "value": 0.9}) is None
    assert claim_of({"metric": "sensitivity", "condition": "melanoma", "value": None}) is None
    assert (
        claim_of({"metric": "sensitivity", "condition": "melanoma", "value": 0.9, "stratum": {"shoe-size": "9"}})
        is None
    )
