"""DICOM names, dates and times as FHIR values (pydicom's PersonName, DA, TM, DT), and the lesion a
dataset's site, laterality and lesion key identify."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError
from pydicom.dataset import Dataset

from dermbridge.settings import Settings
from dicom_node.dicom_values import acquisition_datetime, fhir_date, human_name
from dicom_node.lesions import ImagingConventions, lesion_body, lesion_identifier
from tests.dicom_factories import dermoscopic


def test_person_names_use_pydicom() -> None:
    assert human_name("MUSTER^ANNA^MARIA^DR^PHD") == [
        {"text": "DR ANNA MARIA MUSTER PHD", "family": "MUSTER", "given": ["ANNA", "MARIA"], "prefix": ["DR"],
         "suffix": ["PHD"]}
    ]  # fmt: skip
    assert human_name("") == [] and human_name(None) == []
    assert human_name("Yamada^Tarou=山田^太郎")[0]["family"] == "Yamada"  # the alphabetic group
    # derm review 4, L3: the kanji name is the official one (JP Core), the romaji usual, the kana without a use
    names = human_name("Yamada^Tarou=山田^太郎=やまだ^たろう")
    assert [(n["family"], n.get("use")) for n in names] == [("Yamada", "usual"), ("山田", "official"), ("やまだ", None)]
    assert all("use" not in n for n in human_name("Muller^Anna=ミュラー^アンナ"))  # katakana is no official form


def test_dates_and_times_carry_a_real_offset_or_none() -> None:
    assert fhir_date("19700502") == "1970-05-02" and fhir_date("1970-13-45") is None and fhir_date("") is None
    ds = Dataset()
    ds.ContentDate, ds.ContentTime = "20240105", "101500.25"
    assert acquisition_datetime(ds, None) == "2024-01-05"  # no zone known: the date only, never a blind Z
    assert acquisition_datetime(ds, ZoneInfo("Europe/Berlin")) == "2024-01-05T10:15:00+01:00"
    ds.TimezoneOffsetFromUTC = "-0500"
    assert acquisition_datetime(ds, ZoneInfo("Europe/Berlin")) == "2024-01-05T10:15:00-05:00"  # the object's own
    ds.AcquisitionDateTime = "20240105093000+0200"
    assert acquisition_datetime(ds, None) == "2024-01-05T09:30:00+02:00"
    summer = Dataset()
    summer.AcquisitionDate, summer.AcquisitionTime = "20240705", "0930"
    assert acquisition_datetime(summer, ZoneInfo("Europe/Berlin")) == "2024-07-05T09:30:00+02:00"  # DST-aware


def test_a_lesion_is_patient_site_laterality_and_key() -> None:
    first, later = dermoscopic(seed=1), dermoscopic(seed=2)  # two studies, two series
    first.ImageLaterality = later.ImageLaterality = "R"
    first.SeriesDescription = later.SeriesDescription = "Lesion 3"
    assert lesion_identifier(first, "p1", "SeriesInstanceUID") != lesion_identifier(later, "p1", "SeriesInstanceUID")
    assert lesion_identifier(first, "p1", "SeriesDescription") == lesion_identifier(later, "p1", "SeriesDescription")
    assert lesion_identifier(first, "p1", "SeriesDescription") != lesion_identifier(first, "p2", "SeriesDescription")
    later.ImageLaterality = "L"
    assert lesion_identifier(first, "p1", "SeriesDescription") != lesion_identifier(later, "p1", "SeriesDescription")
    body = lesion_body(first, "p1", "SeriesDescription")
    assert body["morphology"]["coding"][0]["code"] == "52988006"
    nail = dermoscopic(seed=3)
    nail.AnatomicRegionSequence[0].CodeValue, nail.AnatomicRegionSequence[0].CodeMeaning = "770802007", "Nail unit"
    assert lesion_body(nail, "p1", "SeriesInstanceUID")["morphology"]["text"] == "Lesion"  # a nail is not skin
    assert body["description"] == (
        "Skin lesion at Skin structure, Right, series 1 (Lesion 3); images grouped by SeriesDescription 'Lesion 3'"
    )
    by_series = lesion_body(first, "p1", "SeriesInstanceUID")["description"]
    assert first.SeriesInstanceUID not in by_series and by_series.endswith(", Right, series 1 (Lesion 3)")
    assert body["locationQualifier"] == [{"coding": [{"system": "http://snomed.info/sct", "code": "24028007",
                                                       "display": "Right"}], "text": "Right"}]  # fmt: skip


def test_per_tenant_conventions_are_checked_at_start() -> None:
    with pytest.raises(ValidationError, match="not DICOM keywords"):
        Settings(dicom_lesion_key={"default": "LesionNumberish"})
    with pytest.raises(ValidationError, match="not an IANA time zone"):
        Settings(dicom_timezone={"default": "Mars/Olympus_Mons"})
    settings = Settings(dicom_lesion_key={"a": "SeriesDescription"}, dicom_timezone={"a": "Europe/Berlin"})
    conventions = ImagingConventions(settings.dicom_lesion_key, settings.dicom_timezone)
    assert conventions.lesion_key("a") == "SeriesDescription" and conventions.lesion_key("b") == "SeriesInstanceUID"
    assert conventions.zone("a") == ZoneInfo("Europe/Berlin") and conventions.zone("b") is None
