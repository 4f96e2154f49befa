"""Which lesion an image shows, across studies and visits (the BodyStructure of ``dicom_node.lesions``).

A tenant's lesion key decides identity. A **stable** key (a label the device writes at every visit,
e.g. SeriesDescription "Lesion 3" or TrackingID (0062,0020)) is the identity itself: same patient,
site and label, same lesion. A **per-visit** key (SeriesInstanceUID, the default: one series per
lesion) is new at every visit, so a later visit's series is linked to an earlier lesion by its site
(AnatomicRegionSequence + modifiers + laterality, compared code by code) only when that site names
exactly **one** earlier lesion of the patient and that lesion has no other series in the same visit
(two series of one visit at one site are two lesions). Anything else is a new lesion whose
``description`` says why: a wrong link would compare one mole with another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset

from dicom_node.lesions import (
    LESION_SYSTEM,
    VISIT_SYSTEM,
    lesion_body,
    lesion_identifier,
    per_visit_key,
    qualifiers,
    site_coding,
    visit_identifier,
)
from fhir_server.repository import Repository, Stored

MAX_LESIONS = 1000  # a patient's lesions read to match a site (a full-body map has a few hundred at most)


@dataclass(frozen=True, slots=True)
class Match:
    """An earlier lesion to link, or None and why not ("" when the patient has none at the site)."""

    lesion: Stored | None
    why_new: str = ""


def _token(coding: dict[str, Any]) -> str:
    return f"{coding.get('system', '')}|{coding.get('code', '')}"


def image_site(ds: Dataset) -> tuple[str, frozenset[str]] | None:
    """The image's site: region code and its qualifiers (modifiers, laterality); None if not recorded."""
    site = site_coding(ds)
    if site is None:
        return None
    return _token(site), frozenset(_token(q["coding"][0]) for q in qualifiers(ds))


def lesion_site(body: dict[str, Any]) -> tuple[str, frozenset[str]] | None:
    codings = body.get("location", {}).get("coding") or []
    if not codings:
        return None
    found = frozenset(_token(c) for q in body.get("locationQualifier", []) for c in q.get("coding", [])[:1])
    return _token(codings[0]), found


def _has(body: dict[str, Any], system: str, value: str) -> bool:
    return any(i.get("system") == system and i.get("value") == value for i in body.get("identifier", []))


async def earlier_lesion(repo: Repository, ds: Dataset, patient_id: str) -> Match:
    """The patient's one earlier lesion at this image's exact site, if there is exactly one to link."""
    site = image_site(ds)
    if site is None:
        return Match(None, "Not linked to an earlier lesion: the image records no anatomic site")
    lesions = await repo.find("BodyStructure", [("patient", f"Patient/{patient_id}")], MAX_LESIONS)
    same = [b for b in lesions if b.resource.get("active", True) and lesion_site(b.resource) == site]
    if not same:
        return Match(None)
    if len(same) > 1:
        return Match(None, f"Not linked to an earlier lesion: {len(same)} lesions of the patient lie at this "
                           "site; a clinician links it if it is one of them")  # fmt: skip
    if _has(same[0].resource, VISIT_SYSTEM, visit_identifier(ds, patient_id)):
        return Match(None, "Not linked to an earlier lesion: the lesion at this site has another series in "
                           "this visit, so this series shows another lesion")  # fmt: skip
    return Match(same[0])


async def resolve_lesion(repo: Repository, ds: Dataset, patient_id: str, key_attribute: str) -> Stored:
    """The patient's lesion these images show: found by key, else (a per-visit key) the one earlier
    lesion at the same site, else created on first sight."""
    value, visit = lesion_identifier(ds, patient_id, key_attribute), visit_identifier(ds, patient_id)
    found = await repo.find("BodyStructure", [("identifier", f"{LESION_SYSTEM}|{value}")])
    if found:
        return await _identified(repo, found[0], {LESION_SYSTEM: value, VISIT_SYSTEM: visit})
    why_new = ""
    if per_visit_key(ds, key_attribute):
        match = await earlier_lesion(repo, ds, patient_id)
        if match.lesion is not None:
            return await _identified(repo, match.lesion, {LESION_SYSTEM: value, VISIT_SYSTEM: visit})
        why_new = match.why_new
    return await repo.create(lesion_body(ds, patient_id, key_attribute, why_new), resource_type="BodyStructure",
                             server_built=True)  # fmt: skip


async def _identified(repo: Repository, lesion: Stored, values: dict[str, str]) -> Stored:
    """The lesion with these identifiers: a new key value or visit adds a version, else it is unchanged."""
    body = lesion.resource
    missing = [{"system": s, "value": v} for s, v in values.items() if not _has(body, s, v)]
    if not missing:
        return lesion
    body["identifier"] = [*body.get("identifier", []), *missing]
    return await repo.update(body, resource_type="BodyStructure", id=str(body["id"]), server_built=True)
