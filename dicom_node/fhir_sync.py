"""Keep FHIR in step with the images (DESIGN data flow 1): the Patient resolved by identifier
(``dicom_node.patient_match``),
one ImagingStudy per study, one Media per image, and the case DiagnosticReport.

Runs inside the ingest transaction, so a half-synced study is never visible, and two
instances of a new patient arriving at once cannot create the patient twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import tzinfo
from typing import Any

from pydicom.dataset import Dataset

from dicom_node.dicom_values import acquisition_datetime, fhir_datetime
from dicom_node.imaging_device import imaging_device, reference
from dicom_node.lesion_identity import resolve_lesion
from dicom_node.lesions import DEFAULT_LESION_KEY, laterality, site_coding
from dicom_node.order_match import ACCESSION_SYSTEM, OrderMismatch, flag_order_mismatch, ordered_case
from dicom_node.patient_match import resolve_patient
from dicom_node.sop_classes import ENCAPSULATED_PDF
from fhir_server.declared_profiles import CASE_REPORT, DERMOSCOPIC_MEDIA, DERMOSCOPIC_STUDY, declare
from fhir_server.errors import OperationOutcomeError
from fhir_server.repository import Repository, Stored
from fhir_server.workflow.codes import PRODUCT_SYSTEM

DICOM_UID_SYSTEM = "urn:dicom:uid"
DCM_SYSTEM = "http://dicom.nema.org/resources/ontology/DCM"
SCT_SYSTEM = "http://snomed.info/sct"
MEDIA_TYPE_IMAGE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/media-type", "code": "image"}]}
MEDIA_TYPE_DOCUMENT = {"text": "document (encapsulated PDF)"}
CASE_CODE = {"system": "http://loinc.org", "code": "72170-4", "display": "Photographic image"}


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    text = str(value).strip() if value is not None else ""
    return text or None


@dataclass(frozen=True, slots=True)
class SyncResult:
    patient_id: str
    imaging_study_id: str
    media_id: str
    report_id: str
    lesion_id: str = ""
    order_mismatch: OrderMismatch | None = None  # the accession named another patient's case


@dataclass(frozen=True, slots=True)
class KnownIds:
    """The resources an earlier instance of the same study was synced to (the node keeps them in
    its study record). Each is read by id and used only if it is live and still matches this
    instance; otherwise it is searched for as on first sight."""

    patient: str | None = None
    imaging_study: str | None = None
    report: str | None = None


MAX_CANDIDATES = 20


async def _one(repo: Repository, resource_type: str, criteria: list[tuple[str, str]]) -> Stored | None:
    found = await repo.find(resource_type, criteria)
    return found[0] if found else None


async def _patients(
    repo: Repository, resource_type: str, criteria: list[tuple[str, str]], patient_id: str
) -> Stored | None:
    """The first match whose subject is ``Patient/patient_id``: a resource a client wrote with this
    image's UID for another patient is never adopted (the image's own is created instead)."""
    subject = f"Patient/{patient_id}"
    for stored in await repo.find(resource_type, criteria, MAX_CANDIDATES):
        if (stored.resource.get("subject") or {}).get("reference") == subject:
            return stored
    return None


async def _live(repo: Repository, resource_type: str, id: str | None) -> Stored | None:
    if not id:
        return None
    try:
        return await repo.read(resource_type, id)
    except OperationOutcomeError:  # deleted or erased since: searched for instead
        return None


def _identified(stored: Stored | None, system: str, value: str) -> Stored | None:
    identifiers = stored.resource.get("identifier", []) if stored is not None else []
    return stored if any(i.get("system") == system and i.get("value") == value for i in identifiers) else None


async def _endpoint(repo: Repository, dicomweb_base: str) -> str:
    found = await _one(repo, "Endpoint", [("identifier", f"urn:dermbridge:endpoint|{dicomweb_base}")])
    if found is not None:
        return str(found.resource["id"])
    endpoint = {
        "resourceType": "Endpoint",
        "identifier": [{"system": "urn:dermbridge:endpoint", "value": dicomweb_base}],
        "status": "active",
        "name": "DermBridge DICOMweb",
        "connectionType": {"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
                           "code": "dicom-wado-rs"},
        "payloadType": [{"text": "DICOM"}],
        "payloadMimeType": ["application/dicom"],
        "address": dicomweb_base,
    }  # fmt: skip
    created = await repo.create(endpoint, resource_type="Endpoint", server_built=True)
    return str(created.resource["id"])


def _uid(uid: str) -> str:
    return f"urn:oid:{uid}"


async def _imaging_study(
    repo: Repository, ds: Dataset, patient_id: str, dicomweb_base: str, known: str | None, zone: tzinfo | None
) -> Stored:
    study_uid = str(ds.StudyInstanceUID)
    found = _identified(await _live(repo, "ImagingStudy", known), DICOM_UID_SYSTEM, _uid(study_uid))
    if found is None:
        found = await _patients(repo, "ImagingStudy", [("identifier", f"{DICOM_UID_SYSTEM}|{_uid(study_uid)}")],
                                patient_id)  # fmt: skip
    body: dict[str, Any]
    if found is None:
        body = {
            "resourceType": "ImagingStudy",
            "identifier": [{"system": DICOM_UID_SYSTEM, "value": _uid(study_uid)}],
            "status": "available",
            "subject": {"reference": f"Patient/{patient_id}"},
            "endpoint": [{"reference": f"Endpoint/{await _endpoint(repo, dicomweb_base)}"}],
            "series": [],
        }
        accession = _text(ds, "AccessionNumber")
        if accession:
            body["identifier"].append(
                {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]},
                 "system": ACCESSION_SYSTEM, "value": accession}
            )  # fmt: skip
        started = fhir_datetime(ds, "StudyDate", "StudyTime", zone)
        if started and "T" in started:
            body["started"] = started
        description = _text(ds, "StudyDescription")
        if description:
            body["description"] = description
    else:
        body = dict(found.resource)
    _add_instance(body, ds)
    declare(body, DERMOSCOPIC_STUDY)
    if found is None:
        return await repo.create(body, resource_type="ImagingStudy", server_built=True)
    return await repo.update(body, resource_type="ImagingStudy", id=str(found.resource["id"]), server_built=True)


def _instance(ds: Dataset) -> dict[str, Any]:
    instance: dict[str, Any] = {
        "uid": str(ds.SOPInstanceUID),
        "sopClass": {"system": "urn:ietf:rfc:3986", "code": _uid(str(ds.SOPClassUID))},
    }
    if ds.get("InstanceNumber") is not None:
        instance["number"] = int(ds.InstanceNumber)
    return instance


def _add_instance(body: dict[str, Any], ds: Dataset, title: str | None = None) -> None:
    """The instance in its series of the ImagingStudy ``body`` (the series added when new), and the counts."""
    series_uid, instance = str(ds.SeriesInstanceUID), _instance(ds)
    if title:
        instance["title"] = title
    series = next((s for s in body["series"] if s["uid"] == series_uid), None)
    if series is None:
        series = {"uid": series_uid, "modality": {"system": DCM_SYSTEM, "code": str(ds.Modality)}, "instance": []}
        if ds.get("SeriesNumber") is not None:
            series["number"] = int(ds.SeriesNumber)
        if _text(ds, "SeriesDescription"):
            series["description"] = _text(ds, "SeriesDescription")
        body["series"].append(series)
    _series_site(series, ds)
    if not any(i["uid"] == instance["uid"] for i in series["instance"]):
        series["instance"].append(instance)
    series["numberOfInstances"] = len(series["instance"])
    body["numberOfSeries"] = len(body["series"])
    body["numberOfInstances"] = sum(len(s["instance"]) for s in body["series"])
    codes = {(s["modality"]["system"], s["modality"]["code"]) for s in body["series"]}
    body["modality"] = [{"system": system, "code": code} for system, code in sorted(codes)]


async def add_derived_instance(repo: Repository, ds: Dataset, imaging_study_id: str, title: str) -> Stored | None:
    """A DICOM object the server derived from the study's images (an AI result's SR or SEG) listed in the
    study's ImagingStudy, in its own series (imagingstudy.html#ImagingStudy.series); None when the
    ImagingStudy is gone."""
    found = await _live(repo, "ImagingStudy", imaging_study_id)
    if found is None:
        return None
    body = dict(found.resource)
    _add_instance(body, ds, title)
    return await repo.update(body, resource_type="ImagingStudy", id=imaging_study_id, server_built=True)


def _series_site(series: dict[str, Any], ds: Dataset) -> None:
    """``series.bodySite`` / ``series.laterality`` (imagingstudy.html, DICOM Body Part / Anatomic
    Region and Laterality): the first instance that says them sets them."""
    site, side = site_coding(ds), laterality(ds)
    if site is not None and "bodySite" not in series:
        series["bodySite"] = site
    if side is not None and "laterality" not in series:
        series["laterality"] = side


async def _media(
    repo: Repository, ds: Dataset, patient_id: str, study: Stored, instance_url: str, zone: tzinfo | None
) -> Stored:
    """The image as Media; an encapsulated PDF points at the DICOM object, an image at its rendering."""
    sop_uid = str(ds.SOPInstanceUID)
    is_pdf = str(ds.SOPClassUID) == ENCAPSULATED_PDF
    found = await _patients(repo, "Media", [("identifier", f"{DICOM_UID_SYSTEM}|{_uid(sop_uid)}")], patient_id)
    media: dict[str, Any] = {
        "resourceType": "Media",
        "identifier": [{"system": DICOM_UID_SYSTEM, "value": _uid(sop_uid)}],
        "status": "completed",
        "type": MEDIA_TYPE_DOCUMENT if is_pdf else MEDIA_TYPE_IMAGE,
        "modality": {"coding": [{"system": DCM_SYSTEM, "code": str(ds.Modality)}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "partOf": [{"reference": f"ImagingStudy/{study.resource['id']}"}],
        "content": (
            {"contentType": "application/dicom", "url": instance_url}
            if is_pdf
            else {"contentType": "image/jpeg", "url": f"{instance_url}/rendered"}
        ),
    }
    created = acquisition_datetime(ds, zone)
    if created:
        media["createdDateTime"] = created
    for keyword, element in (("Rows", "height"), ("Columns", "width"), ("NumberOfFrames", "frames")):
        value = ds.get(keyword)
        if value is not None and int(value) > 0:
            media[element] = int(value)
    device = await imaging_device(repo, ds)
    if device is not None:
        media["device"] = reference(device, ds)
    site, side = site_coding(ds), laterality(ds)
    if site is not None:  # the side in the text: a CodeableConcept's codings are one concept, not site + side
        words = [site.get("display", site["code"]), *([side.get("display", side["code"])] if side else [])]
        media["bodySite"] = {"coding": [site], "text": ", ".join(words)}
    if not is_pdf:
        declare(media, DERMOSCOPIC_MEDIA)
    if found is None:
        return await repo.create(media, resource_type="Media", server_built=True)
    media_id = str(found.resource["id"])
    return await repo.update({**media, "id": media_id}, resource_type="Media", id=media_id, server_built=True)


async def _case(
    repo: Repository, ds: Dataset, patient_id: str, study: Stored, media: Stored, known: str | None,
    product: str | None,
) -> tuple[Stored, OrderMismatch | None]:  # fmt: skip
    """The case: the one this study's earlier instances joined, else found by the study UID or
    by AccessionNumber (an order's accession, only a case of this patient: ``dicom_node.order_match``),
    else opened (tagged with ``product`` when the tenant's product rules name one); and the mismatch
    when the accession named another patient's case."""
    study_uid = str(ds.StudyInstanceUID)
    study_ref = {"reference": f"ImagingStudy/{study.resource['id']}"}
    found = await _live(repo, "DiagnosticReport", known)
    if found is not None and study_ref not in found.resource.get("imagingStudy", []):
        found = None
    if found is None:
        found = await _patients(repo, "DiagnosticReport", [("identifier", f"{DICOM_UID_SYSTEM}|{_uid(study_uid)}")],
                                patient_id)  # fmt: skip
    accession, mismatch = _text(ds, "AccessionNumber"), None
    if found is None and accession:
        found, mismatch = await ordered_case(repo, accession, patient_id)
        if mismatch is not None:
            mismatch = await flag_order_mismatch(repo, ds, patient_id, mismatch)
    media_ref = {"link": {"reference": f"Media/{media.resource['id']}"}}
    if found is None:
        report: dict[str, Any] = {
            "resourceType": "DiagnosticReport",
            "identifier": [{"system": DICOM_UID_SYSTEM, "value": _uid(study_uid)}],
            "status": "registered",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "IMG"}]}],
            "code": {"coding": [CASE_CODE]},
            "subject": {"reference": f"Patient/{patient_id}"},
            "imagingStudy": [study_ref],
            "media": [media_ref],
        }
        if accession and mismatch is None:  # the accession stays the order's: it names one patient's case
            report["identifier"].append({"system": ACCESSION_SYSTEM, "value": accession})
        if product:
            report["meta"] = {"tag": [{"system": PRODUCT_SYSTEM, "code": product}]}
        created = await repo.create(declare(report, CASE_REPORT), resource_type="DiagnosticReport", server_built=True)
        return created, mismatch
    report = dict(found.resource)
    changed = False
    if study_ref not in report.setdefault("imagingStudy", []):
        report["imagingStudy"].append(study_ref)
        changed = True
    if not any(m.get("link") == media_ref["link"] for m in report.setdefault("media", [])):
        report["media"].append(media_ref)
        changed = True
    if not changed:
        return found, None
    return await repo.update(report, resource_type="DiagnosticReport", id=str(report["id"]), server_built=True), None


async def sync_instance(
    repo: Repository, ds: Dataset, dicomweb_base: str, known: KnownIds = KnownIds(), *,
    lesion_key: str = DEFAULT_LESION_KEY, zone: tzinfo | None = None, product: str | None = None,
) -> SyncResult:  # fmt: skip
    """``lesion_key``: the DICOM attribute that groups images into lesions; ``zone``: the devices'
    local zone when the objects carry no TimezoneOffsetFromUTC (both per tenant); ``product``: the
    product of a case this instance opens (``dicom_node.case_product``)."""
    patient = await resolve_patient(repo, ds, known.patient)
    patient_id = str(patient.resource["id"])
    study = await _imaging_study(repo, ds, patient_id, dicomweb_base, known.imaging_study, zone)
    instance_url = (
        f"{dicomweb_base}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    )
    media = await _media(repo, ds, patient_id, study, instance_url, zone)
    report, mismatch = await _case(repo, ds, patient_id, study, media, known.report, product)
    lesion_id = ""
    if str(ds.SOPClassUID) != ENCAPSULATED_PDF:
        lesion_id = str((await resolve_lesion(repo, ds, patient_id, lesion_key)).resource["id"])
    return SyncResult(patient_id, str(study.resource["id"]), str(media.resource["id"]), str(report.resource["id"]),
                      lesion_id, mismatch)  # fmt: skip
