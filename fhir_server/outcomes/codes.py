"""The codes outcomes monitoring reads and writes, in one place so producers, searches and tests agree.

Checked 2026-11-30: HL7 v2 table 0074 (``PAT`` pathology, ``SP`` surgical pathology); LOINC 66555-4
"Skin type [Fitzpatrick Classification Scale]"; DICOM PS3.16 CID 4401 "Fitzpatrick Skin Type" (NCIt
C74569-C74574; pydicom 3.0's concept dictionary names the scheme ``LN``, the standard says NCIt); SNOMED CT
skin phototypes 403221005-403236008; SNOMED CT 714797009 |Histologic test (procedure)|.

The target conditions (melanoma, squamous cell carcinoma, basal cell carcinoma) are recognised by the SNOMED
CT concepts listed below (disorders and ICD-O morphologies, melanoma in situ counted as melanoma). A
diagnosis outside these and the listed other diagnoses is *unclassified*: it is excluded from the figures
and counted, never silently taken as "not cancer" (no terminology server here to walk the hierarchy).
"""

from __future__ import annotations

from typing import Any

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
NCIT = "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl"  # the HL7 system URI of the NCI Thesaurus
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
PATHOLOGY_CATEGORIES = frozenset({"PAT", "SP"})
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"

OUTCOME_SYSTEM = "urn:dermbridge:outcome"
GROUND_TRUTH_CODE = "histology-ground-truth"
GROUND_TRUTH_IDENTIFIER = "urn:dermbridge:histology-ground-truth"
HISTOLOGY_OF = "urn:dermbridge:fhir:StructureDefinition:histology-of"  # DiagnosticReport -> lesion or case
BODY_SITE_EXTENSION = "http://hl7.org/fhir/StructureDefinition/bodySite"  # R4: Reference(BodyStructure)
DIAGNOSIS = {"system": SNOMED, "code": "439401001", "display": "Diagnosis"}
HISTOLOGIC_TEST = {"system": SNOMED, "code": "714797009", "display": "Histologic test"}
DRIFT = {"system": OUTCOME_SYSTEM, "code": "ai-performance-drift",
         "display": "AI performance below its model card's figure"}  # fmt: skip
DRIFT_IDENTIFIER = "urn:dermbridge:ai-performance-drift"

FITZPATRICK = {"system": LOINC, "code": "66555-4", "display": "Skin type [Fitzpatrick Classification Scale]"}
FITZPATRICK_TYPES = ("I", "II", "III", "IV", "V", "VI")
FITZPATRICK_VALUES: dict[tuple[str, str], str] = {
    **{(NCIT, f"C745{69 + i}"): t for i, t in enumerate(FITZPATRICK_TYPES)},  # CID 4401
    (SNOMED, "403221005"): "I", (SNOMED, "403222003"): "II", (SNOMED, "403226000"): "III",
    (SNOMED, "403231003"): "IV", (SNOMED, "403235007"): "V", (SNOMED, "403236008"): "VI",
}  # fmt: skip

MELANOMA, SCC, BCC, OTHER = "melanoma", "squamous-cell-carcinoma", "basal-cell-carcinoma", "other"
CONDITIONS = (MELANOMA, SCC, BCC)  # the model card's risk tiers of the same names
CONDITION_DISPLAY = {MELANOMA: "Melanoma", SCC: "Squamous cell carcinoma", BCC: "Basal cell carcinoma"}
CATEGORY_OF: dict[str, str] = {
    # melanoma (disorders, the ICD-O morphology, melanoma in situ)
    "93655004": MELANOMA, "372244006": MELANOMA, "2092003": MELANOMA, "189758001": MELANOMA,
    # squamous cell carcinoma
    "254651007": SCC, "402815007": SCC, "28899001": SCC,
    # basal cell carcinoma
    "254701007": BCC,
    # other diagnoses: negative for the three
    "400096001": OTHER,  # Melanocytic nevus
    "201101007": OTHER,  # Actinic keratosis
    "403835007": OTHER,  # Seborrheic keratosis
    "400099007": OTHER,  # Dermatofibroma
}  # fmt: skip


def codings(concept: Any) -> list[dict[str, Any]]:
    found = concept.get("coding") if isinstance(concept, dict) else None
    return [c for c in found or [] if isinstance(c, dict)]


def has_coding(concept: Any, system: str, code: str) -> bool:
    return any(c.get("system") == system and c.get("code") == code for c in codings(concept))


def snomed_codes(concept: Any) -> list[str]:
    return [str(c["code"]) for c in codings(concept) if c.get("system") == SNOMED and c.get("code")]


def category(concepts: list[Any]) -> str | None:
    """The diagnostic category of SNOMED CT diagnoses (the most concerning when several are given: melanoma,
    then SCC, then BCC, then other); None when no code is recognised (unclassified)."""
    found = {CATEGORY_OF[c] for concept in concepts for c in snomed_codes(concept) if c in CATEGORY_OF}
    return next((c for c in (*CONDITIONS, OTHER) if c in found), None)


def fitzpatrick_type(concept: Any) -> str | None:
    """I to VI from a CID 4401 (NCIt) or SNOMED CT skin phototype coding."""
    keys = [(str(c.get("system")), str(c.get("code"))) for c in codings(concept)]
    return next((FITZPATRICK_VALUES[k] for k in keys if k in FITZPATRICK_VALUES), None)
