"""The lesion an image shows, as a FHIR ``BodyStructure`` of the patient (bodystructure.html).

Created at ingest, in the transaction that stores the image (DESIGN data flow 1): the lesion exists
whether or not a model may analyse the image (no consent, an unsuitable image), a clinician reviews
per lesion, and the site comes from the DICOM object alone, so the worker needs no second reading.

- ``morphology``: SNOMED CT 52988006 |Lesion (morphologic abnormality)|. "Skin lesion" (95324001)
  is a disorder, not a morphology; the skin is said by ``location``.
- ``location``: the Anatomic Region Sequence (0008,2218; dermatology sites are SNOMED CT, CID 4029 /
  CID 4031); ``locationQualifier``: its Anatomic Region Modifier Sequence (0008,2220) and the image's
  laterality (ImageLaterality (0020,0062), else Laterality (0020,0060); CID 244).
- Identity: which images show the same lesion is decided by one DICOM attribute, the tenant's
  ``lesion key`` (SeriesInstanceUID by default: one series per lesion). Patient + site + laterality +
  that attribute's value make the lesion's identifier, so a later study whose images carry the same
  site and key value (e.g. a SeriesDescription "Lesion 3", or the TrackingID (0062,0020) of PS3.3
  C.8.20.4, "a text label used for tracking a finding ... over time", if the tenant keys on it) joins it.
  A UID key is new at every visit: there ``dicom_node.lesion_identity`` links a later visit's series
  to an earlier lesion only when the site names exactly one (never two lesions merged silently).
- ``identifier``: one ``urn:dermbridge:lesion`` value per key value that showed the lesion, and one
  ``urn:dermbridge:lesion-visit`` value per study (visit) that imaged it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any
from urllib.parse import quote

from pydicom.dataset import Dataset

from dicom_node.dicom_values import zone_named
from fhir_server.declared_profiles import LESION, declare

LESION_SYSTEM = "urn:dermbridge:lesion"
VISIT_SYSTEM = "urn:dermbridge:lesion-visit"  # the studies that imaged the lesion
SCT = "http://snomed.info/sct"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
CODING_SCHEMES = {"SCT": SCT, "SRT": SCT, "DCM": DCM, "LN": "http://loinc.org"}
# "Lesion", not "Skin lesion": a nail unit or a mucosa is not skin, and the location says where it is
LESION_MORPHOLOGY = {"coding": [{"system": SCT, "code": "52988006", "display": "Lesion"}], "text": "Lesion"}
LATERALITY = {  # CID 244
    "R": {"system": SCT, "code": "24028007", "display": "Right"},
    "L": {"system": SCT, "code": "7771000", "display": "Left"},
    "B": {"system": SCT, "code": "51440002", "display": "Right and left"},
}
DEFAULT_LESION_KEY = "SeriesInstanceUID"


@dataclass(frozen=True, slots=True)
class ImagingConventions:
    """Per-tenant DICOM conventions: the attribute that groups images into lesions, and the zone
    of the devices' local times when the objects carry no TimezoneOffsetFromUTC."""

    lesion_keys: dict[str, str] = field(default_factory=dict)  # tenant -> DICOM keyword
    timezones: dict[str, str] = field(default_factory=dict)  # tenant -> IANA zone name

    def lesion_key(self, tenant: str) -> str:
        return self.lesion_keys.get(tenant, DEFAULT_LESION_KEY)

    def zone(self, tenant: str) -> tzinfo | None:
        return zone_named(self.timezones.get(tenant))


def coded(item: Dataset) -> dict[str, Any] | None:
    """A DICOM code sequence item (PS3.3 8.8) as a FHIR Coding."""
    code, scheme = str(item.get("CodeValue") or "").strip(), str(item.get("CodingSchemeDesignator") or "").strip()
    if not code or not scheme:
        return None
    coding = {"system": CODING_SCHEMES.get(scheme, f"urn:dicom:scheme:{quote(scheme, safe='')}"), "code": code}
    meaning = str(item.get("CodeMeaning") or "").strip()
    if meaning:
        coding["display"] = meaning
    return coding


def region(ds: Dataset) -> Dataset | None:
    sequence = ds.get("AnatomicRegionSequence")
    return sequence[0] if sequence else None


def site_coding(ds: Dataset) -> dict[str, Any] | None:
    item = region(ds)
    return coded(item) if item is not None else None


def laterality(ds: Dataset) -> dict[str, Any] | None:
    value = str(ds.get("ImageLaterality") or ds.get("Laterality") or "").strip().upper()
    return LATERALITY.get(value)


def qualifiers(ds: Dataset) -> list[dict[str, Any]]:
    item = region(ds)
    modifiers = [coded(m) for m in (item.get("AnatomicRegionModifierSequence") or [])] if item is not None else []
    found = [m for m in modifiers if m is not None]
    side = laterality(ds)
    if side is not None and side not in found:
        found.append(side)
    return [{"coding": [c], "text": c.get("display", c["code"])} for c in found]


def lesion_identifier(ds: Dataset, patient_id: str, key_attribute: str) -> str:
    site = site_coding(ds) or {}
    modifiers = sorted(f"{q['coding'][0]['system']}|{q['coding'][0]['code']}" for q in qualifiers(ds))
    key_value = str(ds.get(key_attribute) or ds.get(DEFAULT_LESION_KEY) or "").strip()
    parts = [patient_id, f"{site.get('system', '')}|{site.get('code', '')}", *modifiers, key_attribute, key_value]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def _series(ds: Dataset) -> str:
    number, described = str(ds.get("SeriesNumber") or "").strip(), str(ds.get("SeriesDescription") or "").strip()
    label = f"series {number}" if number else "series without a number"
    return f"{label} ({described})" if described else label


def lesion_description(ds: Dataset, key_attribute: str, where: str) -> str:
    """For people: where the lesion is and which series first showed it; a UID key is not shown."""
    text = f"Skin lesion at {where}, {_series(ds)}"
    key_value = str(ds.get(key_attribute) or "").strip()
    if key_value and not key_attribute.endswith("UID"):
        text += f"; images grouped by {key_attribute} '{key_value}'"
    return text


def visit_identifier(ds: Dataset, patient_id: str) -> str:
    """The visit (study) an image belongs to, as a lesion identifier value."""
    return hashlib.sha256(f"{patient_id}\x1f{ds.get('StudyInstanceUID', '')}".encode()).hexdigest()[:32]


def per_visit_key(ds: Dataset, key_attribute: str) -> bool:
    """A key whose value a device makes anew at every visit (a UID, or the series UID it falls back to)."""
    return key_attribute.endswith("UID") or not str(ds.get(key_attribute) or "").strip()


def lesion_body(ds: Dataset, patient_id: str, key_attribute: str, why_new: str = "") -> dict[str, Any]:
    """``why_new``: why no earlier lesion of the patient was linked (said in the description)."""
    site = site_coding(ds)
    found = qualifiers(ds)
    where = ", ".join([site.get("display", site["code"]) if site else "site not recorded"]
                      + [q["text"] for q in found])  # fmt: skip
    body: dict[str, Any] = {
        "resourceType": "BodyStructure",
        "identifier": [
            {"system": LESION_SYSTEM, "value": lesion_identifier(ds, patient_id, key_attribute)},
            {"system": VISIT_SYSTEM, "value": visit_identifier(ds, patient_id)},
        ],
        "active": True,
        "morphology": LESION_MORPHOLOGY,
        "description": lesion_description(ds, key_attribute, where) + (f". {why_new}" if why_new else ""),
        "patient": {"reference": f"Patient/{patient_id}"},
    }
    if site is not None:
        body["location"] = {"coding": [site], "text": site.get("display", site["code"])}
    if found:
        body["locationQualifier"] = found
    return declare(body, LESION)
