"""Specific Character Set round trips (PS3.5 §6.1, PS3.4 C.4.1.1.3.1), as a PACS team would check them: names
(PN) and descriptions (LO) in UTF-8 (ISO_IR 192), Latin-1 (ISO_IR 100, German umlauts), Japanese (ISO 2022
IR 87: the alphabetic, ideographic and phonetic groups) and Greek (ISO_IR 126), stored by dcmtk's storescu or
pynetdicom, are found by dcmtk's findscu with the right characters, come back byte for byte with their
(0008,0005) by C-GET and WADO-RS, and give the FHIR Patient the right name."""

from __future__ import annotations

import email.parser
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet  # type: ignore[attr-defined]

from dicom_node.sop_classes import DERMOSCOPIC_PHOTOGRAPHY
from tests.dicom_factories import dermoscopic, write
from tests.dicom_node.conftest import DicomNode

pytestmark = pytest.mark.interop
BASE = "/fhir/default"


@dataclass(frozen=True)
class Named:
    character_set: str | list[str]
    name: str
    description: str
    family: str
    given: str
    sender: str  # "storescu" or "pynetdicom"


CASES = {
    "utf8": Named("ISO_IR 192", "Łukasiewicz^Zoë", "Läsion, Schulter (Ł)", "Łukasiewicz", "Zoë", "pynetdicom"),
    "latin1": Named("ISO_IR 100", "Müller^Jürgen", "Hautläsion Rücken", "Müller", "Jürgen", "storescu"),
    "japanese": Named(
        ["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎=やまだ^たろう", "Hifu", "Yamada", "Tarou", "pynetdicom"
    ),
    "greek": Named("ISO_IR 126", "Διονυσίου^Ελένη", "Βλάβη δέρματος", "Διονυσίου", "Ελένη", "storescu"),
}


def _instance(key: str, case: Named) -> Dataset:
    ds = dermoscopic(patient_id=f"CSET-{key}", accession=f"ACC-CSET-{key}")
    ds.SpecificCharacterSet = case.character_set
    ds.PatientName = case.name
    ds.StudyDescription = case.description
    return ds


def _raw(ds: Dataset, keyword: str) -> bytes:
    """The element's value as encoded on the wire (never decoded)."""
    return bytes(ds.get_item(keyword).value)


@pytest.fixture
def stored(node: DicomNode, tmp_path: Path) -> Iterator[dict[str, Dataset]]:
    """Each case's instance, as sent (read back from its file, raw values kept)."""
    sent: dict[str, Dataset] = {}
    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context(DERMOSCOPIC_PHOTOGRAPHY)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="DERMBRIDGE")
    assert assoc.is_established
    for key, case in CASES.items():
        path = write(_instance(key, case), tmp_path / "in", f"{key}.dcm")
        if case.sender == "storescu":
            result = node.run("storescu", str(path))
            assert result.returncode == 0, result.stderr
        else:
            assert assoc.send_c_store(pydicom.dcmread(path)).Status == 0x0000
        sent[key] = pydicom.dcmread(path)
    assoc.release()
    yield sent


def _findscu(node: DicomNode, tmp_path: Path, key: str, character_set: str | list[str]) -> Dataset:
    out = tmp_path / f"rsp-{key}"
    out.mkdir()
    terms = "\\".join(character_set) if isinstance(character_set, list) else character_set
    result = node.run(
        "findscu",
        "-S",
        "-X",
        "-od",
        str(out),
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"SpecificCharacterSet={terms}",
        "-k",
        f"PatientID=CSET-{key}",
        "-k",
        "PatientName",
        "-k",
        "StudyDescription",
        "-k",
        "StudyInstanceUID",
    )
    assert result.returncode == 0, result.stderr
    (response,) = [pydicom.dcmread(path) for path in out.iterdir()]
    return response


@pytest.mark.parametrize("key", list(CASES))
def test_findscu_reads_each_name_in_its_own_character_set(
    node: DicomNode, stored: dict[str, Dataset], tmp_path: Path, key: str
) -> None:
    case = CASES[key]
    response = _findscu(node, tmp_path, key, case.character_set)
    assert _raw(response, "PatientName").rstrip(b" ") == _raw(stored[key], "PatientName").rstrip(b" ")
    assert response.SpecificCharacterSet == case.character_set  # the query's set holds every value
    assert str(response.PatientName) == case.name and response.StudyDescription == case.description


def _c_get(port: int, study: str) -> list[Dataset]:
    received: list[Dataset] = []

    def on_store(event: Any) -> int:
        received.append(pydicom.dcmread(io.BytesIO(event.encoded_dataset(include_meta=True))))
        return 0x0000

    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(DERMOSCOPIC_PHOTOGRAPHY)
    assoc = ae.associate(
        "127.0.0.1",
        port,
        ae_title="DERMBRIDGE",
        ext_neg=[build_role(DERMOSCOPIC_PHOTOGRAPHY, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel, query.StudyInstanceUID = "STUDY", study
    statuses = [int(s.Status) for s, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)]
    assoc.release()
    assert statuses[-1] == 0x0000, [hex(s) for s in statuses]
    return received


def _wado(node: DicomNode, ds: Dataset) -> Dataset:
    url = f"/dicomweb/default/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    response = node.client.get(url, headers={"Accept": 'multipart/related; type="application/dicom"'})
    assert response.status_code == 200, response.text
    head = f"Content-Type: {response.headers['content-type']}\r\n\r\n".encode()
    message = email.parser.BytesParser().parsebytes(head + response.content)
    [part] = [p.get_payload(decode=True) for p in message.walk() if p.get_content_type() == "application/dicom"]
    return pydicom.dcmread(io.BytesIO(part))


def test_c_get_and_wado_rs_return_the_names_unchanged(node: DicomNode, stored: dict[str, Dataset]) -> None:
    for key, sent in stored.items():
        for label, back in (("C-GET", _c_get(node.port, sent.StudyInstanceUID)[0]), ("WADO-RS", _wado(node, sent))):
            assert back.SpecificCharacterSet == sent.SpecificCharacterSet, (key, label)
            for keyword in ("PatientName", "StudyDescription"):
                assert _raw(back, keyword) == _raw(sent, keyword), (key, label, keyword)
            assert str(back.PatientName) == CASES[key].name, (key, label)


def test_the_fhir_patient_gets_the_right_name(node: DicomNode, stored: dict[str, Dataset]) -> None:
    for key, sent in stored.items():
        found = node.client.get(
            f"{BASE}/ImagingStudy", params={"identifier": f"urn:dicom:uid|urn:oid:{sent.StudyInstanceUID}"}
        )
        subject = found.json()["entry"][0]["resource"]["subject"]["reference"]
        names = node.client.get(f"{BASE}/{subject}").json()["name"]
        assert (names[0]["family"], names[0]["given"]) == (CASES[key].family, [CASES[key].given]), key
    japanese = node.client.get(f"{BASE}/Patient", params={"family": "山田"}).json()
    [patient] = [e["resource"] for e in japanese.get("entry", [])]
    representations = {n["extension"][0]["valueCode"]: n for n in patient["name"] if n.get("extension")}
    assert (representations["IDE"]["family"], representations["IDE"]["given"]) == ("山田", ["太郎"])
    assert (representations["SYL"]["family"], representations["SYL"]["given"]) == ("やまだ", ["たろう"])
    assert representations["ABC"]["family"] == "Yamada"
