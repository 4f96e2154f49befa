"""DICOM values as FHIR values, through pydicom's own value representations (PS3.5 6.2): person
names with ``PersonName``, dates and times with ``DA``/``TM``/``DT``, never hand-written parsers.

Times of day need a zone to be a FHIR ``dateTime`` (datatypes.html#dateTime: "if hours and minutes
are specified, a timezone SHALL be populated"). DICOM gives one through a DT's own offset or
TimezoneOffsetFromUTC (0008,0201, PS3.3 C.12.1.1.8); else the tenant's configured zone applies; with
neither, only the date is given: a wrong hour is worse than none.
"""

from __future__ import annotations

import logging
import unicodedata
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from pydicom.dataset import Dataset
from pydicom.valuerep import DA, DT, TM, PersonName

log = logging.getLogger(__name__)


REPRESENTATION = "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation"
GROUPS = ("ABC", "IDE", "SYL")  # PS3.5 6.2.1.2: alphabetic, ideographic, phonetic component groups


def _one_name(group: PersonName, family_first: bool = False) -> dict[str, Any] | None:
    family, given, middle = group.family_name.strip(), group.given_name.strip(), group.middle_name.strip()
    prefix, suffix = group.name_prefix.strip(), group.name_suffix.strip()
    order = (family, given, middle) if family_first else (given, middle, family)  # 山田 太郎, Tarou Yamada
    text = " ".join(p for p in (prefix, *order, suffix) if p)
    if not text:
        return None
    name: dict[str, Any] = {"text": text}
    if family:
        name["family"] = family
    if given or middle:
        name["given"] = [p for p in (given, middle) if p]
    if prefix:
        name["prefix"] = [prefix]
    if suffix:
        name["suffix"] = [suffix]
    return name


def human_name(value: Any) -> list[dict[str, Any]]:
    """A DICOM PN (component groups alphabetic=ideographic=phonetic, each family^given^middle^prefix^suffix) as
    FHIR HumanNames: one per group present, the alphabetic first; when there is more than one, each says which
    it is with the ISO 21090 EN representation extension (ABC, IDE, SYL), as HL7 V2/CDA do for Japanese names,
    and an ideographic name (kanji) is ``official`` (``_use``)."""
    if value is None or not str(value).strip():
        return []
    pn = value if isinstance(value, PersonName) else PersonName(str(value))
    groups = (PersonName(pn.alphabetic), PersonName(pn.ideographic), PersonName(pn.phonetic))
    named = ((code, _one_name(group, family_first=code != "ABC")) for code, group in zip(GROUPS, groups, strict=True))
    names = [(code, name) for code, name in named if name is not None]
    if len(names) == 1:
        return [names[0][1]]
    official = any(code == "IDE" and _ideographic(name.get("text", "")) for code, name in names)
    return [{**name, **_use(code, official), "extension": [{"url": REPRESENTATION, "valueCode": code}]}
            for code, name in names]  # fmt: skip


def _ideographic(text: str) -> bool:
    """Written in CJK ideographs (kanji, hanzi, hanja), as the ideographic group is meant to be (PS3.5 H, I, J)."""
    return any(unicodedata.name(c, "").startswith("CJK UNIFIED IDEOGRAPH") for c in text)


def representation(name: dict[str, Any]) -> str:
    """Which PN component group (ABC, IDE, SYL) a FHIR HumanName fills, the inverse of ``human_name``: its ISO
    21090 EN representation extension, else IDE when written in CJK ideographs (a JP Core kanji name), SYL when
    written in kana only, else ABC (PS3.5 6.2.1.2)."""
    for extension in name.get("extension") or []:
        if (
            isinstance(extension, dict)
            and extension.get("url") == REPRESENTATION
            and extension.get("valueCode") in GROUPS
        ):
            return str(extension["valueCode"])
    text = " ".join(str(p) for p in (name.get("family"), *(name.get("given") or []), name.get("text")) if p)
    if _ideographic(text):
        return "IDE"
    letters = [c for c in text if c.isalpha()]
    kana = ("HIRAGANA", "KATAKANA")
    return "SYL" if letters and all(unicodedata.name(c, "").startswith(kana) for c in letters) else "ABC"


def _use(code: str, official: bool) -> dict[str, str]:
    """A name written in ideographs is the ``official`` one, the alphabetic then ``usual`` (derm review 4, L3: JP
    Core gives the kanji name ``use: official``; a system that ignores the representation extension reads ``use``)."""
    if not official:
        return {}
    return {"IDE": {"use": "official"}, "ABC": {"use": "usual"}}.get(code, {})


def fhir_date(value: Any) -> str | None:
    """A DICOM DA as a FHIR ``date``; None when absent or not a valid date."""
    parsed = _parse(DA, value)
    return parsed.isoformat() if isinstance(parsed, date) else None


def dataset_offset(ds: Dataset) -> timezone | None:
    """TimezoneOffsetFromUTC (``+HHMM``/``-HHMM``) as a fixed zone."""
    text = str(ds.get("TimezoneOffsetFromUTC") or "").strip()
    if len(text) != 5 or text[0] not in "+-" or not text[1:].isdigit():
        return None
    minutes = int(text[1:3]) * 60 + int(text[3:5])
    return timezone(timedelta(minutes=-minutes if text[0] == "-" else minutes))


def zone_named(name: str | None) -> tzinfo | None:
    return ZoneInfo(name) if name else None


def fhir_datetime(ds: Dataset, date_keyword: str, time_keyword: str, fallback: tzinfo | None) -> str | None:
    """A DA + TM pair of ``ds`` as a FHIR dateTime (a date alone when the zone is unknown)."""
    day = _parse(DA, ds.get(date_keyword))
    if not isinstance(day, date):
        return None
    moment = _parse(TM, ds.get(time_keyword))
    if not isinstance(moment, time):
        return day.isoformat()
    return _zoned(datetime.combine(day, moment), dataset_offset(ds) or fallback)


def acquisition_datetime(ds: Dataset, fallback: tzinfo | None) -> str | None:
    """When the image was taken (PS3.3 C.7.6.1 / C.7.6.16): AcquisitionDateTime, else
    AcquisitionDate + AcquisitionTime, else ContentDate + ContentTime."""
    stamp = _parse(DT, ds.get("AcquisitionDateTime"))
    if isinstance(stamp, datetime):
        if stamp.tzinfo is not None:
            return stamp.isoformat(timespec="seconds")
        return _zoned(stamp, dataset_offset(ds) or fallback)
    return fhir_datetime(ds, "AcquisitionDate", "AcquisitionTime", fallback) or fhir_datetime(
        ds, "ContentDate", "ContentTime", fallback
    )


def _zoned(naive: datetime, zone: tzinfo | None) -> str:
    if zone is None:
        return naive.date().isoformat()
    return naive.replace(tzinfo=zone).isoformat(timespec="seconds")


def _parse(kind: type, value: Any) -> Any:
    if value is None or not str(value).strip():
        return None
    try:
        return value if isinstance(value, kind) else kind(str(value).strip())
    except (ValueError, TypeError, OverflowError):
        log.info("not a valid DICOM %s: %r", kind.__name__, value)
        return None
