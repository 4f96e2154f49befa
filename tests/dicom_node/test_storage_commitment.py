"""Storage Commitment Push Model (PS3.4 Annex J) with pynetdicom as the device's SCU, as a modality would ask:
the N-EVENT-REPORT lists what the node holds durably and fails what it does not (0112), on the same
association or on a new one to the device's configured address."""

from __future__ import annotations

import json
import socket
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
from tests.dicom_node.conftest import AE_TENANTS, DicomNode, wait_for
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


def test_a_reference_asked_for_many_times_is_looked_up_and_reported_once(node: DicomNode) -> None:
    """dicom review 2: 10,000 copies of one reference were 10,000 lookups and 10,000 report items."""
    reports = Reports()
    assoc = device().associate("127.0.0.1", node.port, ae_title="DERMBRIDGE",
                               evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.handle)])  # fmt: skip
    assert assoc.is_established
    try:
        kept = stored_one(assoc)
        transaction = pydicom.uid.generate_uid()
        same = (str(DERMOSCOPIC_PHOTOGRAPHY), str(kept.SOPInstanceUID))
        status, _ = assoc.send_n_action(request(transaction, *[same] * 10_000), 1, StorageCommitmentPushModel,
                                        WELL_KNOWN)  # fmt: skip
        assert status.Status == 0x0000
        event_type, info = reports.one()
    finally:
        assoc.release()
    assert event_type == 1
    assert [str(i.ReferencedSOPInstanceUID) for i in info.ReferencedSOPSequence] == [kept.SOPInstanceUID]


def test_more_references_than_the_bound_are_refused_with_resource_limitation(node: DicomNode) -> None:
    assoc = device().associate("127.0.0.1", node.port, ae_title="DERMBRIDGE")
    assert assoc.is_established
    try:
        many = [(str(DERMOSCOPIC_PHOTOGRAPHY), f"1.2.3.{n}") for n in range(10_001)]
        status, _ = assoc.send_n_action(request("1.2.3", *many), 1, StorageCommitmentPushModel, WELL_KNOWN)
    finally:
        assoc.release()
    assert status.Status == 0x0213 and "10000 instances" in status.ErrorComment


def test_an_oversized_action_information_is_refused_before_it_is_decoded(node: DicomNode) -> None:
    """dicom review 3: the size was only checked on the decoded references; a few references padded to megabytes
    were decoded (and accepted) whatever their encoded size."""
    assoc = device().associate("127.0.0.1", node.port, ae_title="DERMBRIDGE")
    assert assoc.is_established
    try:
        padded = request(pydicom.uid.generate_uid(), (str(DERMOSCOPIC_PHOTOGRAPHY), pydicom.uid.generate_uid()))
        padded.ReferencedSOPSequence[0].add_new(0x00091010, "OB", b"\0" * 3_000_000)  # private padding, 3 MB
        status, _ = assoc.send_n_action(padded, 1, StorageCommitmentPushModel, WELL_KNOWN)
    finally:
        assoc.release()
    assert status.Status == 0x0213 and "bytes of Action Information" in status.ErrorComment


def _reports_audited(node: DicomNode) -> list[dict[str, str]]:
    path = node.data_dir / "audit" / "dicom.jsonl"
    entries = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return [e for e in entries if e["action"] == "N-EVENT-REPORT"]


def _ask(node: DicomNode, *transactions: str) -> list[int]:
    """N-ACTIONs from COMMITTER, one stored instance referenced per transaction; their statuses."""
    assoc = device("COMMITTER").associate("127.0.0.1", node.port, ae_title="DERMBRIDGE")
    assert assoc.is_established
    try:
        kept = stored_one(assoc)
        reference = (str(DERMOSCOPIC_PHOTOGRAPHY), str(kept.SOPInstanceUID))
        answers = [assoc.send_n_action(request(t, reference), 1, StorageCommitmentPushModel, WELL_KNOWN)[0]
                   for t in transactions]  # fmt: skip
    finally:
        assoc.release()
    return [int(status.Status) for status in answers]


def test_a_device_that_never_answers_the_association_costs_the_nodes_own_timeout(tmp_path: Path) -> None:
    """dicom review 7: the report's association used a bare AE with fixed 60 s timeouts (none for the
    connection), not the node's; a device that takes the connection and never answers held a thread that long.
    Now the node's ARTIM (``dicom_artim_timeout_seconds``) bounds it, the connection is closed and the report
    audited as a failure."""
    port = free_port()
    silent = socket.create_server(("127.0.0.1", 0))
    client = make_client(tmp_path / "var", dicom_port=port, dicom_ae_tenants={**AE_TENANTS, "COMMITTER": "default"},
                         dicom_move_destinations={"COMMITTER": f"127.0.0.1:{silent.getsockname()[1]}"},
                         dicom_artim_timeout_seconds=2)  # fmt: skip
    with client, silent:
        client.post("/fhir/default/$nothing")
        node = DicomNode(client, port, tmp_path / "var", silent.getsockname()[1])
        transaction = pydicom.uid.generate_uid()
        assert _ask(node, transaction) == [0x0000]
        silent.settimeout(30)
        connection, _ = silent.accept()
        with connection:
            connection.settimeout(30)
            while connection.recv(65536):  # the A-ASSOCIATE-RQ, never answered; then the node closes
                pass
        assert wait_for(lambda: len(_reports_audited(node)) == 1, 30)  # it was 60 s
    (entry,) = _reports_audited(node)
    assert entry["outcome"] == "failure" and transaction in entry["detail"]


def test_reports_on_new_associations_wait_for_one_bounded_worker(configured_device: tuple[DicomNode, int]) -> None:
    """pentest 4 F6: each N-ACTION started its own thread and association; now one worker sends them and at most
    64 wait (queued or being sent); beyond that the N-ACTION is refused with Resource limitation (0x0213)."""
    node, device_port = configured_device
    held, reports = threading.Event(), Reports()

    def handle(event: Any) -> tuple[int, None]:
        assert held.wait(120), "the test did not let the report through"
        return reports.handle(event)

    listening = AE(ae_title="COMMITTER")
    listening.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
    server = listening.start_server(("127.0.0.1", device_port), block=False,
                                    evt_handlers=[(evt.EVT_N_EVENT_REPORT, handle)])  # fmt: skip
    try:
        transactions = [pydicom.uid.generate_uid() for _ in range(65)]
        statuses = _ask(node, *transactions)
        held.set()
        assert statuses == [0x0000] * 64 + [0x0213]
        assert wait_for(lambda: len(reports.received) == 64, 120)
    finally:
        held.set()
        server.shutdown()
    assert wait_for(lambda: len(_reports_audited(node)) == 64, 120)
    assert {e["outcome"] for e in _reports_audited(node)} == {"success"}
