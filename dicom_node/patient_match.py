"""The Patient of an image (DESIGN data flow 1; PS3.3 C.7.1.1 Patient Module, C.7.1.1.1.1 Issuer
of Patient ID): found by identifier, created on first sight, never silently changed.

- PatientID belongs to the identifier system the tenant maps IssuerOfPatientID to (``dermbridge
  issuer set CLINIC-MRN urn:clinic:mrn``), else the one the Issuer of Patient ID Qualifiers name
  (an ISO OID, a UUID or a URI), else the issuer itself when it is a URI, else a URN naming it.
- A Patient that was merged into another (``link`` ``replaced-by``) stands for its survivor.
- When the image's name, birth date or sex differ from the matched Patient's, the image is still
  filed under it (the identifier decides) but nothing is overwritten: a review Task says what
  differs, once per study.
"""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from pydicom.dataset import Dataset

from dicom_node.dicom_values import fhir_date, human_name
from fhir_server.errors import OperationOutcomeError
from fhir_server.identity.issuers import issuer_systems
from fhir_server.identity.merge_input import linked
from fhir_server.repository import Repository, Stored
from fhir_server.search.escaping import token

NO_ISSUER_SYSTEM = "urn:dermbridge:dicom-patient-id"
TASK_SYSTEM = "urn:dermbridge:task"
IDENTITY_REVIEW = {"coding": [{"system": TASK_SYSTEM, "code": "patient-identity-review",
                               "display": "Patient identity review"}]}  # fmt: skip
REVIEW_KEY_SYSTEM = "urn:dermbridge:identity-review"
DICOM_UID_SYSTEM = "urn:dicom:uid"
ENTITY_ID_PREFIX = {"ISO": "urn:oid:", "UUID": "urn:uuid:", "URI": ""}  # PS3.3 10.14.1.3 Universal Entity ID Type
SEXES = {"M": "male", "F": "female", "O": "other"}
MAX_LINKS = 5


def dicom_text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    text = str(value).strip() if value is not None else ""
    return text or None


def issuer_urn(issuer: str | None) -> str:
    """IssuerOfPatientID as an identifier system when the tenant does not map it."""
    if not issuer:
        return NO_ISSUER_SYSTEM
    return issuer if ":" in issuer else f"urn:dermbridge:issuer:{quote(issuer, safe='')}"


def _qualified_system(ds: Dataset) -> str | None:
    qualifiers = ds.get("IssuerOfPatientIDQualifiersSequence")
    if not qualifiers:
        return None
    entity, kind = dicom_text(qualifiers[0], "UniversalEntityID"), dicom_text(qualifiers[0], "UniversalEntityIDType")
    prefix = ENTITY_ID_PREFIX.get(kind or "")
    if not entity or prefix is None or (prefix == "" and ":" not in entity):
        return None
    return prefix + entity


async def identifier_systems(repo: Repository, ds: Dataset) -> list[str]:
    """The systems the image's PatientID may be in, the one a new Patient gets first."""
    issuer = dicom_text(ds, "IssuerOfPatientID")
    mapped = (await issuer_systems(repo.transaction or repo.store)).get(issuer) if issuer else None
    candidates = (mapped, _qualified_system(ds), issuer_urn(issuer))
    return list(dict.fromkeys(c for c in candidates if c))


def image_name(ds: Dataset) -> list[dict[str, Any]]:
    """PatientName (PS3.5 6.2 PN, read with pydicom's ``PersonName``) as HumanNames."""
    return human_name(ds.get("PatientName"))


def birth_date(ds: Dataset) -> str | None:
    """PatientBirthDate (PS3.5 6.2 DA, read with pydicom's ``DA``) as a FHIR date."""
    return fhir_date(ds.get("PatientBirthDate"))


def new_patient(ds: Dataset, system: str, patient_id: str | None) -> dict[str, Any]:
    patient: dict[str, Any] = {"resourceType": "Patient"}
    if patient_id:
        patient["identifier"] = [{"system": system, "value": patient_id}]
    name, born, sex = image_name(ds), birth_date(ds), SEXES.get(dicom_text(ds, "PatientSex") or "")
    if name:
        patient["name"] = name
    if sex:
        patient["gender"] = sex
    if born:
        patient["birthDate"] = born
    return patient


def _carries(stored: Stored, systems: list[str], value: str) -> bool:
    return any(i.get("system") in systems and i.get("value") == value for i in stored.resource.get("identifier", []))


async def _live(repo: Repository, id: str) -> Stored | None:
    try:
        return await repo.read("Patient", id)
    except OperationOutcomeError:  # deleted or erased since
        return None


async def survivor(repo: Repository, stored: Stored) -> Stored:
    """The Patient a merged record was replaced by ($merge), else the record itself."""
    for _ in range(MAX_LINKS):
        replaced_by = linked(stored.resource, "replaced-by")
        survivor = await _live(repo, replaced_by[0]) if replaced_by else None
        if survivor is None:
            return stored
        stored = survivor
    return stored


async def _find(repo: Repository, systems: list[str], value: str, known: str | None) -> Stored | None:
    if known:
        stored = await _live(repo, known)
        if stored is not None and _carries(stored, systems, value):
            return stored
    for system in systems:
        found = await repo.find("Patient", [("identifier", token(system, value))])
        if found:
            return await survivor(repo, found[0])
    return None


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold().strip()


def _name_differs(image: list[dict[str, Any]], record: list[dict[str, Any]]) -> bool:
    if not image or not record or not image[0].get("family"):
        return False
    family, given = _fold(image[0]["family"]), [_fold(g) for g in image[0].get("given", [])[:1]]
    for name in record:
        same_family = _fold(str(name.get("family", ""))) == family
        first = [_fold(str(g)) for g in (name.get("given") or [])[:1]]
        if same_family and (not given or not first or given == first):
            return False
    return True


def _show_name(names: list[dict[str, Any]]) -> str:
    name = names[0] if names else {}
    return str(name.get("text") or " ".join([*name.get("given", []), name.get("family", "")]).strip() or "(none)")


def differences(ds: Dataset, patient: dict[str, Any]) -> list[str]:
    """What the image says about the person that the Patient record contradicts."""
    found = []
    on_image, on_record = image_name(ds), patient.get("name") or []
    if _name_differs(on_image, on_record):
        found.append(f"name: image {_show_name(on_image)!r}, record {_show_name(on_record)!r}")
    born, recorded = birth_date(ds), patient.get("birthDate")
    if born and isinstance(recorded, str) and not born.startswith(recorded) and not recorded.startswith(born):
        found.append(f"birth date: image {born}, record {recorded}")
    sex, gender = SEXES.get(dicom_text(ds, "PatientSex") or ""), patient.get("gender")
    if sex and gender in SEXES.values() and sex != gender:
        found.append(f"sex: image {sex}, record {gender}")
    return found


def _uid_input(what: str, uid: str) -> dict[str, Any]:
    return {"type": {"text": what}, "valueIdentifier": {"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{uid}"}}


async def review_task(
    repo: Repository, ds: Dataset, key: str, patient_id: str, description: str, inputs: tuple[dict[str, Any], ...] = ()
) -> Stored:
    """A requested identity review Task about ``Patient/patient_id`` (one per ``key``); ``inputs``: what else
    it is about, after the DICOM study and instance."""
    existing = await repo.find("Task", [("identifier", f"{REVIEW_KEY_SYSTEM}|{key}")])
    if existing:
        return existing[0]
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    task = {
        "resourceType": "Task",
        "identifier": [{"system": REVIEW_KEY_SYSTEM, "value": key}],
        "status": "requested",
        "intent": "order",
        "priority": "urgent",
        "code": IDENTITY_REVIEW,
        "description": description,
        "focus": {"reference": f"Patient/{patient_id}"},
        "for": {"reference": f"Patient/{patient_id}"},
        "authoredOn": now,
        "lastModified": now,
        "input": [_uid_input("DICOM study", str(ds.StudyInstanceUID)),
                  _uid_input("DICOM instance", str(ds.SOPInstanceUID)), *inputs],
    }  # fmt: skip
    return await repo.create(task, resource_type="Task", server_built=True)


def _shown_identifier(ds: Dataset, patient: dict[str, Any] | None) -> str:
    value = dicom_text(ds, "PatientID")
    identifiers = (patient or {}).get("identifier", [])
    return next((f"{i.get('system')}|{value}" for i in identifiers if i.get("value") == value), str(value))


async def flag_differences(repo: Repository, ds: Dataset, patient: Stored) -> Stored | None:
    """A requested identity review Task when the image contradicts the record (one per study)."""
    found = differences(ds, patient.resource)
    if not found:
        return None
    patient_id, study_uid = str(patient.resource["id"]), str(ds.StudyInstanceUID)
    description = (
        f"DICOM study {study_uid} was matched to Patient/{patient_id} by its identifier "
        f"{_shown_identifier(ds, patient.resource)}, but its demographics differ ({'; '.join(found)}). The images "
        "were filed under this Patient and the record was not changed: confirm the identity, or correct the "
        "images' patient (DICOM) or merge records (Patient/$merge)."
    )
    return await review_task(repo, ds, f"{patient_id}/{study_uid}", patient_id, description)


async def flag_foreign_study(repo: Repository, ds: Dataset, uid: str, owner: str, claimed: str | None) -> Stored:
    """A requested identity review Task when an image's identifier names another patient than the one its
    ``uid`` (StudyInstanceUID, SeriesInstanceUID or SOPInstanceUID) was filed under: the image was refused
    (one Task per study, owner and named patient)."""
    named = f"Patient/{claimed}" if claimed else "a patient not on record"
    description = (
        f"A DICOM instance ({ds.SOPInstanceUID}) with identifier {_shown_identifier(ds, None)} (= {named}) "
        f"carries the {uid} {ds.get(uid)} of images filed under Patient/{owner}, and was refused so that no image "
        "of one patient joins another's study. Correct the images' patient or study UID (DICOM) and send them again, "
        "or merge records (Patient/$merge) if both are the same person."
    )
    key = f"{owner}/{ds.StudyInstanceUID}/{claimed or dicom_text(ds, 'PatientID')}"
    return await review_task(repo, ds, key, owner, description)


async def identified_patient(repo: Repository, ds: Dataset, known: str | None = None) -> Stored | None:
    """The Patient on record that the image's PatientID names (none is created); an image without a
    PatientID stands for ``known`` (the Patient its study was filed under), if live."""
    patient_id = dicom_text(ds, "PatientID")
    if not patient_id:
        return await _live(repo, known) if known else None
    return await _find(repo, await identifier_systems(repo, ds), patient_id, known)


async def resolve_patient(repo: Repository, ds: Dataset, known: str | None = None) -> Stored:
    """The Patient with this PatientID (in the issuer's system), created on first sight."""
    found = await identified_patient(repo, ds, known)
    if found is not None:
        if dicom_text(ds, "PatientID"):
            await flag_differences(repo, ds, found)
        return found
    systems = await identifier_systems(repo, ds)
    return await repo.create(new_patient(ds, systems[0], dicom_text(ds, "PatientID")), resource_type="Patient",
                             server_built=True)  # fmt: skip
