"""Storage Commitment Push Model (PS3.4 Annex J) with pynetdicom as the device's SCU, as a modality would ask:
the N-EVENT-REPORT lists what the node holds durably and fails what it does not (0112), on the same
association or on a new one to the device's configured address."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]

from dicom_node.sop_classes import DERMOSCOPIC_PHOTOGRAPHY, STORAGE_CLASSES
from tests.conftest import make_client
from tests.dicom_factories import dermoscopic
from tests.dicom_node.conftest import AE_TENANTS, DicomNode
from tests.server import free_port

pytestmark = pytest.mark.interop
WELL_KNOWN = "1.2.840.10008.1.20.1.1"


class Reports:
    """The N-EVENT-REPORTs a device receives (its handler answers Success)."""

    def __init__(self) -> None:
        self.received: list[tuple[int, Dataset]] = []
        self.arrived = threading.Event()

    def handle(self, event: Any) -> tuple[int, None]:
        self.received.append((int(event.event_type), event.event_information))
        self.arrived.set()
        return 0x0000, None

    def one(self) -> tuple[int, Dataset]:
        assert self.arrived.wait(60), "no N-EVENT-REPORT within 60 s"
        return self.received[0]


def device(title: str = "PYNETDICOM") -> AE:
    ae = AE(ae_title=title)
    for sop_class in STORAGE_CLASSES:
        ae.add_requested_context(sop_class)
    ae.add_requested_context(StorageCommitmentPushModel)
    return ae


def request(transaction: str, *references: tuple[str, str]) -> Dataset:
    ds = Dataset()
    ds.TransactionUID = transaction
    items = []
    for sop_class, sop_instance in references:
        item = Dataset()
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = sop_class, sop_instance
        items.append(item)
    ds.ReferencedSOPSequence = Sequence(items)
    return ds


def stored_one(assoc: Association) -> pydicom.Dataset:
    ds = dermoscopic()
    assert assoc.send_c_store(ds).Status == 0x0000
    return ds


def _uids(items: Any) -> set[str]:
    return {str(item.ReferencedSOPInstanceUID) for item in items or []}


def test_the_report_on_the_same_association_lists_what_is_kept_and_fails_the_unknown(node: DicomNode) -> None:
    reports = Reports()
    assoc = device().associate("127.0.0.1", node.port, ae_title="DERMBRIDGE",
                               evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.handle)])  # fmt: skip
    assert assoc.is_established
    try:
        kept = stored_one(assoc)
        unknown = pydicom.uid.generate_uid()
        transaction = pydicom.uid.generate_uid()
        wrong_class = ("1.2.840.10008.5.1.4.1.1.7", str(kept.SOPInstanceUID))  # it was stored as dermoscopic
        asked = request(transaction, (str(DERMOSCOPIC_PHOTOGRAPHY), str(kept.SOPInstanceUID)),
                        (str(DERMOSCOPIC_PHOTOGRAPHY), unknown), wrong_class)  # fmt: skip
        status, _ = assoc.send_n_action(asked, 1, StorageCommitmentPushModel, WELL_KNOWN)
        assert status.Status == 0x0000
        event_type, info = reports.one()
    finally:
        assoc.release()
    assert event_type == 2  # failures exist
    assert info.TransactionUID == transaction
    assert _uids(info.ReferencedSOPSequence) == {kept.SOPInstanceUID}
    assert info.RetrieveAETitle == "DERMBRIDGE"
    reasons = {(str(i.ReferencedSOPClassUID), str(i.ReferencedSOPInstanceUID)): i.FailureReason
               for i in info.FailedSOPSequence}  # fmt: skip
    assert reasons == {(str(DERMOSCOPIC_PHOTOGRAPHY), unknown): 0x0112, wrong_class: 0x0119}


def test_a_bad_request_is_a_failure_status_with_a_comment(node: DicomNode) -> None:
    assoc = device().associate("127.0.0.1", node.port, ae_title="DERMBRIDGE")
    assert assoc.is_established
    try:
        empty = Dataset()
        empty.TransactionUID = pydicom.uid.generate_uid()
        status, _ = assoc.send_n_action(empty, 1, StorageCommitmentPushModel, WELL_KNOWN)
        assert status.Status == 0x0115 and "Referenced SOP Sequence" in status.ErrorComment
        status, _ = assoc.send_n_action(request("1.2.3", ("1.2", "1.3")), 7, StorageCommitmentPushModel, WELL_KNOWN)
        assert status.Status == 0x0123
        two_transactions = request("1.2.3", ("1.2", "1.3"))
        two_transactions.TransactionUID = ["1.2", "3.4"]  # echoed back, the device could not match its report
        status, _ = assoc.send_n_action(two_transactions, 1, StorageCommitmentPushModel, WELL_KNOWN)
        assert status.Status == 0x0115 and "Transaction UID" in status.ErrorComment
    finally:
        assoc.release()


@pytest.fixture
def configured_device(tmp_path: Path) -> Iterator[tuple[DicomNode, int]]:
    """A node that knows the COMMITTER device's address: reports go on a new association."""
    port, device_port = free_port(), free_port()
    client = make_client(tmp_path / "var", dicom_port=port, dicom_ae_tenants={**AE_TENANTS, "COMMITTER": "default"},
                         dicom_move_destinations={"COMMITTER": f"127.0.0.1:{device_port}"})  # fmt: skip
    with client:
        client.post("/fhir/default/$nothing")
        yield DicomNode(client, port, tmp_path / "var", device_port), device_port


def test_a_device_with_an_address_gets_the_report_on_a_new_association(
    configured_device: tuple[DicomNode, int],
) -> None:
    node, device_port = configured_device
    reports = Reports()
    listening = AE(ae_title="COMMITTER")
    listening.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
    server = listening.start_server(("127.0.0.1", device_port), block=False,
                                    evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.handle)])  # fmt: skip
    try:
        assoc = device("COMMITTER").associate("127.0.0.1", node.port, ae_title="DERMBRIDGE")
        assert assoc.is_established
        kept = stored_one(assoc)
        transaction = pydicom.uid.generate_uid()
        asked = request(transaction, (str(DERMOSCOPIC_PHOTOGRAPHY), str(kept.SOPInstanceUID)))
        status, _ = assoc.send_n_action(asked, 1, StorageCommitmentPushModel, WELL_KNOWN)
        assoc.release()  # the device does not wait on this association
        assert status.Status == 0x0000
        event_type, info = reports.one()
    finally:
        server.shutdown()
    assert event_type == 1  # all committed
    assert info.TransactionUID == transaction and _uids(info.ReferencedSOPSequence) == {kept.SOPInstanceUID}
    assert "FailedSOPSequence" not in info


def test_the_conformance_statement_lists_storage_commitment(node: DicomNode) -> None:
    statement = node.client.get("/conformance/dicom").text
    assert "Storage Commitment Push Model" in statement and "1.2.840.10008.1.20.1" in statement
    assert "SOP specific conformance: Storage Commitment Push Model SCP" in statement
