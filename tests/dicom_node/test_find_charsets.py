"""C-FIND answers non-ASCII names in the character set the query asked for, or in UTF-8 when that
set cannot hold them or the query named none, and always says which (0008,0005) (PS3.5 §6.1)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

from dicom_node.sop_classes import STORAGE_CLASSES
from tests.dicom_factories import dermoscopic
from tests.dicom_node.conftest import DicomNode

pytestmark = pytest.mark.interop
NAMES = {  # stored name -> the character set its instance is stored in
    "Müller^Zoë": "ISO_IR 100",
    "Yamada^Tarou=山田^太郎=やまだ^たろう": ["", "ISO 2022 IR 87"],
    "Διονυσίου^Ελένη": "ISO_IR 126",
}


@pytest.fixture
def association(node: DicomNode) -> Iterator[Association]:
    ae = AE(ae_title="PYNETDICOM")
    for sop_class in STORAGE_CLASSES:
        ae.add_requested_context(sop_class)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="DERMBRIDGE")
    assert assoc.is_established
    for name, character_set in NAMES.items():
        ds = dermoscopic()
        ds.SpecificCharacterSet = character_set
        ds.PatientName = name
        ds.PatientID = f"CS-{abs(hash(name)) % 10**8}"
        assert assoc.send_c_store(ds).Status == 0x0000
    yield assoc
    assoc.release()


def find(assoc: Association, character_set: str | None, name: str = "") -> list[Dataset]:
    query = Dataset()
    if character_set is not None:
        query.SpecificCharacterSet = character_set
    query.QueryRetrieveLevel = "STUDY"
    query.PatientName = name
    query.PatientID = "CS-*"
    responses = assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)
    return [identifier for status, identifier in responses if status and status.Status in (0xFF00, 0xFF01)]


def find_names(assoc: Association, character_set: str | None) -> list[Dataset]:
    answers = find(assoc, character_set)
    assert len(answers) == len(NAMES)
    return answers


def _names(answers: list[Dataset]) -> set[str]:
    return {str(answer.PatientName) for answer in answers}


def test_utf8_query_gets_every_name_in_utf8(association: Association) -> None:
    answers = find_names(association, "ISO_IR 192")
    assert {a.SpecificCharacterSet for a in answers} == {"ISO_IR 192"}
    assert _names(answers) == set(NAMES)


def test_latin1_query_gets_latin1_where_it_can_and_utf8_where_it_cannot(association: Association) -> None:
    answers = find_names(association, "ISO_IR 100")
    by_name = {str(a.PatientName): a for a in answers}
    assert set(by_name) == set(NAMES)  # decoded as each answer says: no ???? and no mojibake
    assert by_name["Müller^Zoë"].SpecificCharacterSet == "ISO_IR 100"
    assert by_name["Yamada^Tarou=山田^太郎=やまだ^たろう"].SpecificCharacterSet == "ISO_IR 192"
    assert by_name["Διονυσίου^Ελένη"].SpecificCharacterSet == "ISO_IR 192"


def test_query_without_character_set_gets_utf8_and_says_so(association: Association) -> None:
    answers = find_names(association, None)
    assert {a.SpecificCharacterSet for a in answers} == {"ISO_IR 192"}
    assert _names(answers) == set(NAMES)


def test_findscu_latin1_query_reads_latin1(association: Association, node: DicomNode, tmp_path: Path) -> None:
    """dcmtk's findscu, asking in ISO_IR 100: the Latin-1 name comes back in Latin-1, labelled so."""
    out = tmp_path / "rsp"
    out.mkdir()
    result = node.run("findscu", "-S", "-X", "-od", str(out), "-k", "QueryRetrieveLevel=STUDY",
                      "-k", "SpecificCharacterSet=ISO_IR 100", "-k", "PatientName=M*", "-k", "PatientID")  # fmt: skip
    assert result.returncode == 0, result.stderr
    (response,) = [pydicom.dcmread(path) for path in out.iterdir()]
    assert response.SpecificCharacterSet == "ISO_IR 100"
    assert str(response.PatientName) == "Müller^Zoë"
    assert "Müller^Zoë".encode("latin-1") in path_bytes(out)


def path_bytes(directory: Path) -> bytes:
    return b"".join(path.read_bytes() for path in directory.iterdir())


@pytest.mark.parametrize(("character_set", "pattern", "name"), [
    ("ISO_IR 100", "müller*", "Müller^Zoë"),
    ("ISO_IR 126", "Διονυσίου*", "Διονυσίου^Ελένη"),
    ("ISO_IR 192", "*ZOË", "Müller^Zoë"),  # case-insensitive beyond ASCII too
])  # fmt: skip
def test_non_ascii_patterns_match_in_their_character_set(
    association: Association, character_set: str, pattern: str, name: str
) -> None:
    answers = find(association, character_set, pattern)
    assert [str(answer.PatientName) for answer in answers] == [name]
