"""The shipped base content: every SNOMED CT identifier well formed, every code DermBridge writes present
with the display it writes, the DICOM context groups as pydicom ships them, every required binding of the
R4 types served resolvable, and the SNOMED CT -> ICD-10 map pointing at shipped codes."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from pydicom.sr._cid_dict import cid_concepts
from pydicom.sr._concepts_dict import concepts

from dicom_node.fhir_sync import CASE_CODE
from dicom_node.lesions import LATERALITY, LESION_MORPHOLOGY
from fhir_server.definitions import base_bindings, resource_types
from fhir_server.outcomes.codes import FITZPATRICK, HISTOLOGIC_TEST
from inference.body_regions import WITHIN
from inference.demo import demo_card
from inference.findings import DIAGNOSIS, EQUIVOCAL
from terminology.content import base_content
from terminology.errors import TerminologyError
from terminology.expansion import Expander

SNOMED = "http://snomed.info/sct"
CANONICAL = "https://dermbridge.org/fhir"
# Verhoeff tables (the check digit of every SNOMED CT identifier, SNOMED CT TIG 6.2)
_D = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 2, 3, 4, 0, 6, 7, 8, 9, 5], [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
    [3, 4, 0, 1, 2, 8, 9, 5, 6, 7], [4, 0, 1, 2, 3, 9, 5, 6, 7, 8], [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2], [7, 6, 5, 9, 8, 2, 1, 0, 4, 3], [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
]  # fmt: skip
_P = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 5, 7, 6, 2, 8, 3, 0, 9, 4], [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
    [8, 9, 1, 6, 0, 4, 3, 5, 2, 7], [9, 4, 5, 3, 1, 2, 6, 8, 7, 0], [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
    [2, 7, 9, 3, 8, 0, 6, 4, 1, 5], [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
]  # fmt: skip


def sctid_valid(code: str) -> bool:
    """A SNOMED CT concept identifier: 6-18 digits, a concept partition ('00' or '10'), Verhoeff check digit."""
    if not re.fullmatch(r"[1-9][0-9]{5,17}", code) or code[-3:-1] not in ("00", "10"):
        return False
    check = 0
    for i, digit in enumerate(reversed(code)):
        check = _D[check][_P[i % 8][int(digit)]]
    return check == 0


def snomed() -> dict[str, str]:
    index = base_content().index(SNOMED)
    assert index is not None
    return {code: concept.display or "" for code, concept in index.concepts.items()}


def test_the_check_digit_test_catches_a_typo() -> None:
    assert sctid_valid("400096001")
    assert not sctid_valid("400096002")  # one digit off
    assert not sctid_valid("109264001")  # the "melanoma in situ" id other projects shipped: not an identifier


def test_every_shipped_snomed_code_is_a_well_formed_concept_identifier() -> None:
    bad = [code for code in snomed() if not sctid_valid(code)]
    assert bad == []


def written_codings() -> list[dict[str, Any]]:
    """The SNOMED CT codings DermBridge writes, taken from the modules that write them."""
    card = demo_card("0")
    codings = [DIAGNOSIS, EQUIVOCAL, HISTOLOGIC_TEST, *LESION_MORPHOLOGY["coding"], *LATERALITY.values()]
    codings += [{"system": SNOMED, "code": c.code, "display": c.display} for c in card.classes]
    for code, (meaning, parts) in WITHIN.items():
        codings.append({"system": SNOMED, "code": code, "display": meaning})
        codings += [{"system": SNOMED, "code": c, "display": d} for c, d in parts.items()]
    return codings


def test_every_snomed_code_the_server_writes_is_shipped_with_the_display_it_writes() -> None:
    shipped = snomed()
    missing = [(c["code"], c["display"]) for c in written_codings() if shipped.get(c["code"]) != c["display"]]
    assert missing == []
    assert {"400096001", "93655004"} <= shipped.keys()


def test_the_loinc_codes_the_server_uses_are_shipped() -> None:
    index = base_content().index("http://loinc.org")
    assert index is not None
    for coding in (CASE_CODE, FITZPATRICK):
        assert index.concepts[coding["code"]].display == coding["display"]


@pytest.mark.parametrize("cid", [4029, 4401, 244])
def test_dicom_context_groups_are_pydicom_s(cid: int) -> None:
    value_set = base_content().by_type["ValueSet"][f"{CANONICAL}/ValueSet/dicom-cid-{cid}"]
    shipped = {(c["code"], c["display"]) for include in value_set["compose"]["include"] for c in include["concept"]}
    expected = {
        (code, meaning)
        for scheme, names in cid_concepts[cid].items()
        for name in names
        for code, (meaning, _) in concepts[scheme][name].items()
    }
    assert shipped == expected


def test_the_icd10_map_points_from_shipped_snomed_codes_to_shipped_icd10_codes() -> None:
    shipped = base_content()
    (concept_map,) = asyncio.run(shipped.concept_maps(SNOMED))
    icd10 = shipped.index("http://hl7.org/fhir/sid/icd-10")
    assert icd10 is not None
    for element in concept_map["group"][0]["element"]:
        assert element["code"] in snomed()
        for target in element["target"]:
            assert re.fullmatch(r"[A-Z][0-9]{2}\.[0-9]", target["code"])
            assert icd10.concepts[target["code"]].display == target["display"]
            assert target["equivalence"] in ("equivalent", "wider")


# MIME types, languages, UCUM; ISO 4217 currencies (Money.currency), an external code system not shipped
GRAMMARS = ("urn:ietf:bcp:13", "urn:ietf:bcp:47", "http://unitsofmeasure.org", "urn:iso:std:iso:4217")


def test_every_required_r4_value_set_shipped_expands_but_those_of_grammars() -> None:
    """Required bindings' value sets (those of extensible and preferred ones may draw on systems not shipped:
    ISO, HL7 v2 tables, SNOMED CT beyond the fragment)."""
    shipped = base_content()
    failures = []
    required = {b.value_set for t in resource_types() for b in base_bindings(t) if b.strength == "required"}
    for value_set in shipped.resources("ValueSet"):
        if value_set["url"] not in required:
            continue
        systems = {i.get("system") for i in value_set.get("compose", {}).get("include", [])}
        if systems & set(GRAMMARS):
            continue
        try:
            entries = asyncio.run(Expander(shipped).expand(value_set))
        except TerminologyError as error:
            failures.append((value_set["url"], str(error)))
            continue
        if not entries:
            failures.append((value_set["url"], "empty"))
    assert failures == []
