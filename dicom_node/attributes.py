"""What the node indexes of an instance: study, series and instance records for C-FIND and QIDO-RS.

Each level is a record (engine-neutral keyed document) whose fields are the matching keys,
normalised for matching (PN and descriptions case-folded), and whose body is the level's
attributes in the DICOM JSON model (PS3.18 F.2), bulk data left out.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import orjson
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from fhir_server.storage.port import Record

STUDY = "dicom.study"
SERIES = "dicom.series"
INSTANCE = "dicom.instance"

PATIENT_KEYS = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex")
STUDY_KEYS = (
    *PATIENT_KEYS, "StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber", "StudyID",
    "StudyDescription", "ReferringPhysicianName",
)  # fmt: skip
SERIES_KEYS = ("SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription", "BodyPartExamined",
               "SeriesDate", "SeriesTime")  # fmt: skip
INSTANCE_KEYS = (
    "SOPClassUID", "SOPInstanceUID", "InstanceNumber", "Rows", "Columns", "NumberOfFrames", "ContentDate",
    "ContentTime", "ImageLaterality", "PhotometricInterpretation", "SamplesPerPixel", "BitsAllocated",
)  # fmt: skip
PATIENT_FIELD = "fhir.patient"  # the Patient id ingest filed the record under: written by the server only
CASE_FOLDED = frozenset({"PatientName", "StudyDescription", "SeriesDescription", "ReferringPhysicianName"})
BULK_THRESHOLD = 1024


def field_value(keyword: str, value: str) -> str:
    return value.casefold() if keyword in CASE_FOLDED else value


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


@functools.cache
def _json_tags(keywords: tuple[str, ...]) -> tuple[str, ...]:
    """The DICOM JSON keys (tags as 8 hex digits) of these keywords, in tag order."""
    return tuple(f"{tag:08X}" for tag in sorted(Tag(keyword) for keyword in keywords))


def _json(metadata: dict[str, Any], keywords: tuple[str, ...]) -> dict[str, Any]:
    """A level's attributes, taken from the instance's DICOM JSON (converted once)."""
    return {tag: metadata[tag] for tag in _json_tags(keywords) if tag in metadata}


def instance_metadata(ds: Dataset) -> dict[str, Any]:
    """The instance's DICOM JSON without bulk data (pixels, encapsulated documents)."""
    skip = {Tag("PixelData"), Tag("EncapsulatedDocument"), Tag("FloatPixelData"), Tag("DoubleFloatPixelData")}
    subset = Dataset()
    for element in ds:
        if element.tag not in skip and element.tag.group != 0x0002:
            subset.add(element)
    return subset.to_json_dict(bulk_data_threshold=BULK_THRESHOLD, bulk_data_element_handler=lambda _: "")


@dataclass(frozen=True, slots=True)
class IndexedInstance:
    study_uid: str
    series_uid: str
    instance_uid: str
    study: Record
    series: Record
    instance: Record


def filed_under(record: Record, patient_id: str) -> Record:
    """The record with the Patient its instance was filed under (``PATIENT_FIELD``): the owner DICOMweb
    access and the study-UID rule go by, never client-writable FHIR content."""
    return Record(record.collection, record.key, record.body, {**record.fields, PATIENT_FIELD: (patient_id,)})


def recorded_patient(record: Record | None) -> str | None:
    """The Patient a study, series or instance record was filed under, None when unknown."""
    if record is None:
        return None
    values = record.fields.get(PATIENT_FIELD)
    if values:
        return values[0]
    if record.collection == STUDY:  # a study record written before the field: its body keeps the ids
        fhir = orjson.loads(record.body).get("fhir")
        patient = fhir.get("patient") if isinstance(fhir, dict) else None
        return patient if isinstance(patient, str) and patient else None
    return None


def _fields(ds: Dataset, keywords: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    found: dict[str, tuple[str, ...]] = {}
    for keyword in keywords:
        text = _text(ds, keyword)
        if text is not None:
            found[keyword] = (field_value(keyword, text),)
    return found


def index_instance(ds: Dataset, transfer_syntax: str, size: int) -> IndexedInstance:
    study_uid, series_uid, instance_uid = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
    study_fields = _fields(ds, STUDY_KEYS)
    series_fields = {**_fields(ds, SERIES_KEYS), "StudyInstanceUID": (study_uid,)}
    instance_fields = {
        **_fields(ds, INSTANCE_KEYS),
        "StudyInstanceUID": (study_uid,),
        "SeriesInstanceUID": (series_uid,),
    }
    metadata = instance_metadata(ds)  # the one DICOM JSON conversion: the levels take their parts of it
    instance_body = {"metadata": metadata, "transferSyntax": transfer_syntax, "size": size}
    return IndexedInstance(
        study_uid,
        series_uid,
        instance_uid,
        Record(STUDY, study_uid, orjson.dumps(_json(metadata, STUDY_KEYS)), study_fields),
        Record(SERIES, series_uid, orjson.dumps(_json(metadata, ("StudyInstanceUID", *SERIES_KEYS))), series_fields),
        Record(INSTANCE, instance_uid, orjson.dumps(instance_body), instance_fields),
    )
