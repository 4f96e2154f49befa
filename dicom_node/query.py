"""Attribute matching for C-FIND and QIDO-RS (PS3.4 C.2.2.2): single value, wildcard, range,
UID list and universal matching, at the PATIENT, STUDY, SERIES and IMAGE levels."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from dicom_node.attributes import (
    CASE_FOLDED,
    INSTANCE,
    INSTANCE_KEYS,
    PATIENT_FIELD,
    PATIENT_KEYS,
    SERIES,
    SERIES_KEYS,
    STUDY,
    STUDY_KEYS,
    field_value,
)
from dicom_node.errors import DicomNodeError
from fhir_server.storage.port import Record, TenantReader
from fhir_server.storage.query import FieldMatch, RecordQuery

LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
_COLLECTION = {"PATIENT": STUDY, "STUDY": STUDY, "SERIES": SERIES, "IMAGE": INSTANCE}
_KEYS = {"PATIENT": PATIENT_KEYS, "STUDY": STUDY_KEYS, "SERIES": SERIES_KEYS, "IMAGE": INSTANCE_KEYS}
_UNIQUE = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}
_COMPUTED = {
    "NumberOfStudyRelatedSeries": ("series", "IS"),
    "NumberOfStudyRelatedInstances": ("instances", "IS"),
    "NumberOfSeriesRelatedInstances": ("instances", "IS"),
}
MAX_MATCHES = 10_000
_PARENTS = {"SERIES": ("STUDY",), "IMAGE": ("STUDY", "SERIES")}
_OWN_KEYS = {  # the non-unique keys a parent level matches for its children
    "STUDY": frozenset(STUDY_KEYS) - {"StudyInstanceUID"},
    "SERIES": frozenset(SERIES_KEYS) - {"SeriesInstanceUID"},
}


class QueryError(DicomNodeError):
    """The identifier cannot be answered (unknown level, a key that cannot be matched)."""


@dataclass(frozen=True, slots=True)
class Match:
    level: str
    record: Record
    attributes: dict[str, Any]  # DICOM JSON of the level, with computed attributes


def _vr(keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    return dictionary_VR(tag) if tag is not None else "UN"


def field_match(keyword: str, raw: str) -> FieldMatch | None:
    """The matching a C-FIND/QIDO value asks for; None for universal matching."""
    value = raw.strip()
    if not value or value == "*":
        return None
    vr = _vr(keyword)
    if vr == "UI" and "\\" in value:
        return FieldMatch(keyword, "in", tuple(v.strip() for v in value.split("\\") if v.strip()))
    if vr in ("DA", "TM", "DT") and "-" in value:
        low, _, high = value.partition("-")
        return FieldMatch(keyword, "range", (_clean(vr, low), _clean(vr, high, upper=True)))
    if vr in ("DA", "TM", "DT"):
        return FieldMatch(keyword, "eq", (_clean(vr, value),))
    folded = field_value(keyword, value)
    if keyword in CASE_FOLDED and vr == "PN" and "*" not in folded and "?" not in folded:
        folded += "*"  # PN: a name component matches its start, as most archives do
    if "*" in folded or "?" in folded:
        return FieldMatch(keyword, "glob", (folded,))
    return FieldMatch(keyword, "eq", (folded,))


def _clean(vr: str, text: str, upper: bool = False) -> str:
    """DA 2024-01-05 -> 20240105; TM 10:00 -> 1000; an upper TM bound covers its whole minute."""
    cleaned = text.strip().replace("-", "").replace(":", "")
    if vr == "TM" and upper and cleaned:
        cleaned = cleaned + "9" * max(0, 6 - len(cleaned.split(".")[0]))
    return cleaned


def record_query(level: str, keys: dict[str, str], limit: int = MAX_MATCHES, offset: int = 0,
                 patient: str | None = None, within: tuple[FieldMatch, ...] = ()) -> RecordQuery:  # fmt: skip
    """Hierarchical matching: the keys of the level, and the unique keys of the levels above;
    ``patient``: only the records ingest filed under this Patient (what a patient/ caller may see,
    ``attributes.PATIENT_FIELD``), None for every record; ``within``: the parent studies or series that
    matched the keys of the levels above (``find``)."""
    if level not in LEVELS:
        raise QueryError(f"unknown QueryRetrieveLevel {level!r}")
    allowed = set(_KEYS[level]) | {"ModalitiesInStudy"} if level in ("STUDY", "PATIENT") else set(_KEYS[level])
    allowed |= {"StudyInstanceUID"} if level in ("SERIES", "IMAGE") else set()
    allowed |= {"SeriesInstanceUID"} if level == "IMAGE" else set()
    matches = []
    for keyword, value in keys.items():
        if keyword not in allowed:
            continue
        match = field_match(keyword, value)
        if match is not None:
            matches.append(match)
    if patient is not None:
        matches.append(FieldMatch(PATIENT_FIELD, "eq", (patient,)))
    return RecordQuery(_COLLECTION[level], (*matches, *within), limit, offset)


def _attributes(level: str, record: Record) -> dict[str, Any]:
    body = orjson.loads(record.body)
    if level == "IMAGE":
        return dict(body["metadata"])
    attributes: dict[str, Any] = dict(body["attributes"])
    if level == "STUDY":
        attributes.update(_computed(("NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"), body))
        modalities = list(record.fields.get("ModalitiesInStudy", ()))
        if modalities:
            attributes[_hex("ModalitiesInStudy")] = {"vr": "CS", "Value": modalities}
    elif level == "SERIES":
        attributes.update(_computed(("NumberOfSeriesRelatedInstances",), body))
    return attributes


def _computed(keywords: tuple[str, ...], body: dict[str, Any]) -> dict[str, Any]:
    return {_hex(k): {"vr": _COMPUTED[k][1], "Value": [body.get(_COMPUTED[k][0], 0)]} for k in keywords}


def _hex(keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    assert tag is not None
    return f"{tag:08X}"


async def find(reader: TenantReader, level: str, keys: dict[str, str], limit: int = MAX_MATCHES,
               offset: int = 0, patient: str | None = None) -> list[Match]:  # fmt: skip
    """The matches of ``keys`` at ``level``. Keys of the levels above (a QIDO-RS ``/instances?PatientID=``,
    PS3.18 10.6.1.2; relational C-FIND) are matched too, through the studies and series they select:
    never ignored, which would answer other patients' instances."""
    within: list[FieldMatch] = []
    for parent in _PARENTS.get(level, ()):
        asked = {k: v for k, v in keys.items() if k in _OWN_KEYS[parent] and field_match(k, v) is not None}
        if not asked:
            continue
        parents = await reader.find_records(record_query(parent, asked, MAX_MATCHES, 0, patient, tuple(within)))
        if not parents:
            return []
        within.append(FieldMatch(_UNIQUE[parent], "in", tuple(r.key for r in parents)))
    records = await reader.find_records(record_query(level, keys, limit, offset, patient, tuple(within)))
    if level == "PATIENT":
        seen: dict[str, Record] = {}
        for record in records:
            patient = record.fields.get("PatientID", ("",))[0]
            seen.setdefault(patient, record)
        records = list(seen.values())
    return [Match(level, r, _attributes(level, r)) for r in records]


def identifier_keys(identifier: Dataset) -> tuple[str, dict[str, str], list[str]]:
    """The level, the matching values by keyword, and every requested keyword (return keys)."""
    level = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
    values: dict[str, str] = {}
    requested: list[str] = []
    for element in identifier:
        keyword = keyword_for_tag(element.tag)
        if not keyword or keyword in ("QueryRetrieveLevel", "SpecificCharacterSet") or element.VR == "SQ":
            continue
        requested.append(keyword)
        value = element.value
        if isinstance(value, MultiValue | list | tuple):
            text = "\\".join(str(v) for v in value)
        else:
            text = "" if value is None else str(value)
        values[keyword] = text
    return level, values, requested


def response_dataset(match: Match, requested: list[str], level: str) -> Dataset:
    """A C-FIND response: the requested keys (empty when unknown) and the level's unique keys."""
    source = Dataset.from_json(match.attributes)
    response = Dataset()
    response.QueryRetrieveLevel = level
    wanted = list(dict.fromkeys([*requested, _UNIQUE[level]]))
    if level in ("SERIES", "IMAGE"):
        wanted.append("StudyInstanceUID")
    if level == "IMAGE":
        wanted.append("SeriesInstanceUID")
    for keyword in wanted:
        if keyword in source:
            response[keyword] = source[keyword]
        elif keyword in match.record.fields and keyword not in CASE_FOLDED:
            setattr(response, keyword, match.record.fields[keyword][0])
        else:
            tag = tag_for_keyword(keyword)
            if tag is not None:
                response.add_new(tag, dictionary_VR(tag), None)
    return response


def iterate_matches(matches: list[Match], requested: list[str], level: str) -> Iterator[Dataset]:
    for match in matches:
        yield response_dataset(match, requested, level)
