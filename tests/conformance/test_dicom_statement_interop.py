"""The presentation contexts the DICOM conformance statement says a C-MOVE proposes are the ones a real
C-MOVE sub-association proposes (pynetdicom as the requestor of the C-MOVE and as the destination SCP)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove  # type: ignore[attr-defined]

from dicom_node.sop_classes import DERMOSCOPIC_PHOTOGRAPHY
from tests.conftest import make_client
from tests.dicom_factories import dermoscopic
from tests.dicom_scu import c_store
from tests.server import free_port

pytestmark = pytest.mark.interop
_ROW = re.compile(r"^\| (?P<name>[^|]+) \| (?P<uid>[0-9.]+) \|(?P<rest>.*)$")


def _proposed_in_statement(text: str) -> set[tuple[str, str]]:
    """(abstract syntax, transfer syntax) pairs of the statement's C-MOVE table and its TS-M sets."""
    section = text[text.index("##### 1.2.1.3") : text.index("###### Activity: send the objects of a C-GET")]
    sets: dict[str, list[str]] = {}
    classes: dict[str, str] = {}
    current: str | None = None
    for line in section.splitlines():
        if label := re.match(r"Transfer syntax set (TS-M\d+):", line):
            current = label.group(1)
            sets[current] = []
        elif (row := _ROW.match(line)) is not None:
            if current is None:
                classes[row["uid"]] = row["rest"].split(",")[0].strip()
            else:
                sets[current].append(row["uid"])
    return {(uid, ts) for uid, label in classes.items() for ts in sets[label]}


def test_a_c_move_proposes_what_the_statement_says(tmp_path: Path) -> None:
    port, destination_port = free_port(), free_port()
    proposed: list[Any] = []

    def on_requested(event: Any) -> None:
        proposed.extend(event.assoc.requestor.requested_contexts)

    destination = AE(ae_title="VIEWER")
    destination.add_supported_context(DERMOSCOPIC_PHOTOGRAPHY, ExplicitVRLittleEndian)
    handlers: list[Any] = [(evt.EVT_REQUESTED, on_requested), (evt.EVT_C_STORE, lambda event: 0x0000)]
    server = destination.start_server(("127.0.0.1", destination_port), block=False, evt_handlers=handlers)
    assert server is not None
    settings: dict[str, Any] = {
        "dicom_port": port,
        "dicom_ae_tenants": {"DERMATOSCOPE": "default", "VIEWERQR": "default"},
        "dicom_move_destinations": {"VIEWER": f"127.0.0.1:{destination_port}"},
    }
    try:
        with make_client(tmp_path / "var", **settings) as client:
            ds = dermoscopic()
            c_store(port, ds)
            scu = AE(ae_title="VIEWERQR")
            scu.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
            assoc = scu.associate("127.0.0.1", port, ae_title="DERMBRIDGE")
            assert assoc.is_established
            query = Dataset()
            query.QueryRetrieveLevel = "STUDY"
            query.StudyInstanceUID = ds.StudyInstanceUID
            statuses = [
                s.Status for s, _ in assoc.send_c_move(query, "VIEWER", StudyRootQueryRetrieveInformationModelMove)
            ]
            assoc.release()
            statement = client.get("/conformance/dicom").text
    finally:
        server.shutdown()
    assert statuses[-1] == 0x0000, [hex(s) for s in statuses]
    actual = {(str(cx.abstract_syntax), str(ts)) for cx in proposed for ts in cx.transfer_syntax}
    assert len(actual) == 10 * 11 + 3 * 2  # 10 storage classes in 11 syntaxes, the 3 own classes (SR, SEG, KOS) in 2
    assert actual == _proposed_in_statement(statement)
    assert all(len(cx.transfer_syntax) == 1 for cx in proposed)  # one context per syntax, as the statement says
