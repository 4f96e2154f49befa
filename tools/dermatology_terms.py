"""The hand-checked dermatology terminology DermBridge ships (terminology/README.md says where each code
was checked). Only codes whose identifier and meaning were confirmed are listed; a code that could not
be confirmed is left out rather than guessed (seborrhoeic keratosis, dermatofibroma and the vascular
lesions, for now: see terminology/README.md)."""

from __future__ import annotations

from typing import Any

from pydicom.sr._cid_dict import cid_concepts, name_for_cid
from pydicom.sr._concepts_dict import concepts

CANONICAL = "https://dermbridge.org/fhir"
SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
LOINC = "http://loinc.org"
NCIT = "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl"
FMA = "http://purl.org/sig/ont/fma"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
SYNONYM = {"system": "http://snomed.info/sct", "code": "900000000000013009", "display": "Synonym"}
SNOMED_VERSION = "http://snomed.info/sct/900000000000207008"  # International Edition, no date pinned

# code -> (display, parents within this fragment). Displays are the ones DermBridge writes where it writes
# the code (inference/, dicom_node/, fhir_server/), else the SNOMED CT preferred term checked.
DISORDERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "95324001": ("Skin lesion", ()),
    "93655004": ("Malignant melanoma of skin", ()),
    "1197294001": ("Malignant melanoma arising in melanocytic nevus", ("93655004",)),
    "109266006": ("Melanoma in situ of skin", ()),
    "400096001": ("Melanocytic nevus", ()),
    "400010006": ("Melanocytic nevus of skin", ("400096001",)),
    "254818000": ("Dysplastic nevus of skin", ("400010006",)),
    "254701007": ("Basal cell carcinoma of skin", ()),
    "716274007": ("Nodular basal cell carcinoma of skin", ("254701007",)),
    "254651007": ("Squamous cell carcinoma of skin", ()),
    "201101007": ("Actinic keratosis", ()),
    "9014002": ("Psoriasis", ()),
    "43116000": ("Eczema", ()),
    "24079001": ("Atopic dermatitis", ()),
    "398909004": ("Rosacea", ()),
}
# British-spelling synonyms seen in the SNOMED CT browser, shipped as designations (use: Synonym)
GB_TERMS = {
    "400096001": "Melanocytic naevus", "400010006": "Melanocytic naevus of skin",
    "254818000": "Dysplastic naevus of skin", "1197294001": "Malignant melanoma arising in melanocytic naevus",
}  # fmt: skip
QUALIFIERS = {
    "439401001": "Diagnosis",
    "42425007": "Equivocal",
    "82334004": "Indeterminate",
    "52988006": "Lesion",
    "394582007": "Dermatology",
    "24028007": "Right",
    "7771000": "Left",
    "51440002": "Right and left",
    "66459002": "Unilateral",
    "39937001": "Skin",
    "714797009": "Histologic test",
}
# SNOMED CT -> ICD-10 (WHO 2019): (code, title, equivalence); "wider": the ICD-10 category is broader
ICD10_MAP: dict[str, tuple[str, str, str]] = {
    "93655004": ("C43.9", "Malignant melanoma of skin, unspecified", "equivalent"),
    "1197294001": ("C43.9", "Malignant melanoma of skin, unspecified", "wider"),
    "109266006": ("D03.9", "Melanoma in situ, unspecified", "equivalent"),
    "400010006": ("D22.9", "Melanocytic naevi, unspecified", "equivalent"),
    "254818000": ("D22.9", "Melanocytic naevi, unspecified", "wider"),
    "254701007": ("C44.9", "Malignant neoplasm of skin, unspecified", "wider"),
    "716274007": ("C44.9", "Malignant neoplasm of skin, unspecified", "wider"),
    "254651007": ("C44.9", "Malignant neoplasm of skin, unspecified", "wider"),
    "201101007": ("L57.0", "Actinic keratosis", "equivalent"),
    "9014002": ("L40.9", "Psoriasis, unspecified", "equivalent"),
    "43116000": ("L30.9", "Dermatitis, unspecified", "wider"),
    "24079001": ("L20.9", "Atopic dermatitis, unspecified", "equivalent"),
    "398909004": ("L71.9", "Rosacea, unspecified", "equivalent"),
}
LOINC_CODES = {"72170-4": "Photographic image", "66555-4": "Skin type [Fitzpatrick Classification Scale]"}


def _cid(cid: int) -> list[tuple[str, str, str]]:
    """(scheme, code, meaning) of a DICOM context group, from pydicom's dictionaries."""
    found = []
    for scheme, names in cid_concepts[cid].items():
        for name in names:
            for code, (meaning, _) in concepts[scheme][name].items():
                found.append((scheme, code, meaning))
    return sorted(found, key=lambda t: t[2])


def _body_sites() -> dict[str, str]:
    from inference.body_regions import WITHIN  # the regions a model card may exclude, DICOM meanings

    found = {code: meaning for scheme, code, meaning in _cid(4029) if scheme == "SCT"}
    for code, (meaning, parts) in WITHIN.items():
        found.setdefault(code, meaning)
        for part, part_meaning in parts.items():
            found.setdefault(part, part_meaning)
    return found


def _concept(code: str, display: str, parents: tuple[str, ...] = ()) -> dict[str, Any]:
    concept: dict[str, Any] = {"code": code, "display": display}
    if code in GB_TERMS:
        concept["designation"] = [{"language": "en", "use": SYNONYM, "value": GB_TERMS[code]}]
    if parents:
        concept["property"] = [{"code": "parent", "valueCode": p} for p in parents]
    return concept


def snomed_fragment() -> dict[str, Any]:
    concepts = [_concept(c, d, p) for c, (d, p) in DISORDERS.items()]
    concepts += [_concept(c, d) for c, d in QUALIFIERS.items()]
    known = {c["code"] for c in concepts}
    concepts += [_concept(c, d) for c, d in sorted(_body_sites().items()) if c not in known]
    return {
        "resourceType": "CodeSystem",
        "id": "snomed-ct-dermatology",
        "url": SNOMED,
        "version": SNOMED_VERSION,
        "name": "SNOMEDCTDermatologyFragment",
        "title": "SNOMED CT (dermatology fragment shipped by DermBridge)",
        "status": "active",
        "content": "fragment",
        "caseSensitive": False,
        "hierarchyMeaning": "is-a",
        "copyright": "This material includes SNOMED Clinical Terms (SNOMED CT) used by permission of SNOMED "
        "International. All rights reserved. Use of SNOMED CT needs an Affiliate Licence from SNOMED "
        "International or a national release centre (free in member countries).",
        "property": [{"code": "parent", "uri": "http://hl7.org/fhir/concept-properties#parent", "type": "code"}],
        "concept": concepts,
    }


def _code_system(id: str, url: str, title: str, copyright: str, concepts: dict[str, str]) -> dict[str, Any]:
    return {
        "resourceType": "CodeSystem",
        "id": id,
        "url": url,
        "name": title.replace(" ", "").replace("-", ""),
        "title": title,
        "status": "active",
        "content": "fragment",
        "caseSensitive": True,
        "copyright": copyright,
        "concept": [_concept(c, d) for c, d in concepts.items()],
    }


def _value_set(id: str, title: str, includes: list[dict[str, Any]], description: str) -> dict[str, Any]:
    return {
        "resourceType": "ValueSet",
        "id": id,
        "url": f"{CANONICAL}/ValueSet/{id}",
        "name": title.replace(" ", ""),
        "title": title,
        "status": "active",
        "description": description,
        "compose": {"include": includes},
    }


def _dicom_value_set(cid: int, id: str, systems: dict[str, str]) -> dict[str, Any]:
    by_system: dict[str, list[dict[str, str]]] = {}
    for scheme, code, meaning in _cid(cid):
        by_system.setdefault(systems[scheme], []).append({"code": code, "display": meaning})
    includes = [{"system": s, "concept": c} for s, c in by_system.items()]
    description = f"DICOM PS3.16 CID {cid} {name_for_cid[cid]}, as shipped in pydicom's code dictionaries."
    value_set = _value_set(id, f"DICOM CID {cid} {name_for_cid[cid]}", includes, description)
    return value_set


def _concept_map() -> dict[str, Any]:
    elements = [
        {
            "code": code,
            "display": DISORDERS[code][0],
            "target": [{"code": icd, "display": title, "equivalence": equivalence}],
        }
        for code, (icd, title, equivalence) in ICD10_MAP.items()
    ]
    return {
        "resourceType": "ConceptMap",
        "id": "snomed-to-icd10-dermatology",
        "url": f"{CANONICAL}/ConceptMap/snomed-to-icd10-dermatology",
        "name": "SnomedToIcd10Dermatology",
        "title": "SNOMED CT to ICD-10 (WHO) for the dermatology diagnoses DermBridge ships",
        "status": "active",
        "sourceUri": f"{CANONICAL}/ValueSet/skin-lesion-diagnoses",
        "targetUri": "http://hl7.org/fhir/sid/icd-10",
        "group": [{"source": SNOMED, "target": ICD10, "element": elements}],
    }


def dermatology_resources() -> list[dict[str, Any]]:
    """Every resource of ``terminology/data/dermatology.json``."""
    icd10 = {icd: title for icd, title, _ in ICD10_MAP.values()}
    diagnoses = [
        {"system": SNOMED, "filter": [{"property": "concept", "op": "is-a", "value": c}]}
        for c in ("93655004", "109266006", "400096001", "254701007", "254651007", "201101007")
    ]
    return [
        snomed_fragment(),
        _code_system(
            "icd-10-dermatology",
            ICD10,
            "ICD-10 (dermatology fragment)",
            "ICD-10 codes and titles are copyright the World Health Organization (WHO); they are "
            "referenced here, not redistributed as a classification.",
            icd10,
        ),
        _code_system(
            "loinc-dermatology",
            LOINC,
            "LOINC (the codes DermBridge writes)",
            "This material contains content from LOINC (http://loinc.org). LOINC is copyright "
            "Regenstrief Institute, Inc. and the Logical Observation Identifiers Names and Codes "
            "(LOINC) Committee and is available at no cost under the license at "
            "http://loinc.org/license. LOINC is a registered United States trademark of "
            "Regenstrief Institute, Inc.",
            LOINC_CODES,
        ),
        _value_set(
            "skin-lesion-diagnoses",
            "Skin lesion diagnoses",
            diagnoses,
            "The lesion diagnoses of DermBridge's SNOMED CT fragment and their descendants in it.",
        ),
        _value_set(
            "inflammatory-skin-diseases",
            "Inflammatory skin diseases",
            [{"system": SNOMED, "concept": [{"code": c} for c in ("9014002", "43116000", "24079001", "398909004")]}],
            "Psoriasis, eczema, atopic dermatitis and rosacea (SNOMED CT).",
        ),
        _dicom_value_set(4029, "dicom-cid-4029", {"SCT": SNOMED, "FMA": FMA, "DCM": DCM}),
        _dicom_value_set(4401, "dicom-cid-4401", {"LN": NCIT}),
        _dicom_value_set(244, "dicom-cid-244", {"SCT": SNOMED}),
        _concept_map(),
    ]
