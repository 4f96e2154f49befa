"""Configured behaviour of the node: duplicates replaced, DICOM TLS, the audit trail, the
generated conformance statement."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE

from dicom_node import statuses
from dicom_node.audit import DCM
from dicom_node.sop_classes import DERMOSCOPIC_PHOTOGRAPHY
from tests.certificates import certificate
from tests.conftest import make_client
from tests.dicom_factories import dermoscopic, write
from tests.dicom_node.conftest import AE_TENANTS, DicomNode, stored_dataset
from tests.server import free_port

pytestmark = pytest.mark.interop


def test_duplicates_replaced_when_configured(tmp_path: Path) -> None:
    port = free_port()
    with make_client(tmp_path / "var", dicom_port=port, dicom_ae_tenants=AE_TENANTS, dicom_duplicates="replace") as c:
        node = DicomNode(c, port, tmp_path / "var", 0)
        first = dermoscopic(seed=1)
        node.run("storescu", str(write(first, tmp_path / "a")), check=True)
        second = dermoscopic(seed=2, sop_uid=first.SOPInstanceUID, study_uid=first.StudyInstanceUID,
                             series_uid=first.SeriesInstanceUID, patient_name="MUSTER^ANNA^MARIA")  # fmt: skip
        node.run("storescu", str(write(second, tmp_path / "b")), check=True)
        assert stored_dataset(c, first.SOPInstanceUID).PatientName == "MUSTER^ANNA^MARIA"
        study = c.get("/fhir/default/ImagingStudy").json()["entry"][0]["resource"]
        assert study["numberOfInstances"] == 1  # replaced, not counted twice
        assert c.get("/fhir/default/Media").json()["total"] == 1


def test_a_stored_instance_is_audited_before_its_success(node: DicomNode, tmp_path: Path) -> None:
    ds = dermoscopic()
    node.run("storescu", str(write(ds, tmp_path)), check=True)
    # no waiting: the AuditEvent committed with the instance, before the sender heard Success
    bundle = node.client.get("/fhir/default/AuditEvent", params={"type": f"{DCM}|110104", "_count": "10"}).json()
    stores = [e["resource"] for e in bundle.get("entry", [])]
    assert len(stores) == 1 and stores[0]["outcome"] == "0" and stores[0]["action"] == "C"
    assert stores[0]["outcomeDesc"] == f"C-STORE success: {ds.StudyInstanceUID}/{ds.SOPInstanceUID}"


def test_audit_records_associations_and_operations(node: DicomNode, tmp_path: Path) -> None:
    node.run("echoscu", check=True)
    # an operation's AuditEvent is durable before its answer: no waiting
    echo = node.client.get("/fhir/default/AuditEvent", params={"type": f"{DCM}|110100"}).json()
    assert [e["resource"]["subtype"][0]["code"] for e in echo.get("entry", [])] == ["C-ECHO"]
    node.run("storescu", str(write(dermoscopic(), tmp_path)), check=True)
    node.run("echoscu", aet="STRANGER")
    records = (node.data_dir / "audit" / "dicom.jsonl").read_text().splitlines()

    entries = [json.loads(r) for r in records]
    actions = [(e["action"], e["outcome"], e["callingAE"]) for e in entries]
    assert ("C-ECHO", "success", "ECHOSCU") in actions
    assert ("C-STORE", "success", "STORESCU") in actions
    assert ("association", "rejected", "STRANGER") in actions
    assert all(e["recorded"] and e["calledAE"] == "DERMBRIDGE" for e in entries)
    assert not any("MUSTER" in r for r in records)  # no personal data in the trail's free text

    # the same records are AuditEvents of the tenant's hash-chained trail (association events are
    # written as they happen, without holding up the association: they may trail a little)
    deadline = time.monotonic() + 10
    while True:
        bundle = node.client.get("/fhir/default/AuditEvent", params={"type": f"{DCM}|", "_count": "100"}).json()
        events = [e["resource"] for e in bundle.get("entry", [])]
        events = [e for e in events if e["source"]["observer"]["display"] == "DermBridge DICOM node"]
        if len(events) >= len(entries):
            break
        assert time.monotonic() < deadline, f"{len(events)} DICOM AuditEvents of {len(entries)} records"
        time.sleep(0.05)
    kinds = {(e["type"]["code"], e["outcome"], e["agent"][0]["altId"]) for e in events}
    assert ("110104", "0", "STORESCU") in kinds  # DICOM Instances Transferred
    assert ("110114", "4", "STRANGER") in kinds  # the refused association
    assert not any("MUSTER" in json.dumps(e) for e in events)


def test_dicom_tls(tmp_path: Path) -> None:
    cert, key = certificate(tmp_path)
    port, tls_port = free_port(), free_port()
    settings = {"dicom_port": port, "dicom_tls_port": tls_port, "dicom_tls_certificate": cert,
                "dicom_tls_private_key": key, "dicom_ae_tenants": AE_TENANTS}  # fmt: skip
    with make_client(tmp_path / "var", **settings), ExitStack() as silent_peers:
        for _ in range(5):  # connected, and never starting their TLS handshake
            silent_peers.enter_context(socket.create_connection(("127.0.0.1", tls_port)))
        ae = AE(ae_title="PYNETDICOM")
        ae.add_requested_context(DERMOSCOPIC_PHOTOGRAPHY, pydicom.uid.ExplicitVRLittleEndian)
        ae.acse_timeout = ae.connection_timeout = 60
        client_tls = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
        started = time.monotonic()
        assoc = ae.associate("localhost", tls_port, ae_title="DERMBRIDGE", tls_args=(client_tls, "localhost"))
        assert assoc.is_established
        assert time.monotonic() - started < 5  # handshakes are not made one after another in the accepting thread
        assert assoc.send_c_store(dermoscopic()).Status == statuses.SUCCESS
        assoc.release()

        def echo(target: int) -> int:
            command = ["echoscu", "-to", "5", "-aet", "ECHOSCU", "-aec", "DERMBRIDGE", "127.0.0.1", str(target)]
            return subprocess.run(command, capture_output=True, timeout=30).returncode

        assert echo(tls_port) != 0  # no plain DICOM on the TLS port
        assert echo(port) == 0  # the plain port still answers


def test_conformance_statement_is_generated(node: DicomNode) -> None:
    response = node.client.get("/conformance/dicom")
    assert response.status_code == 200
    text = response.text
    assert "1.2.840.10008.5.1.4.1.1.77.1.7" in text and "Dermoscopic Photography" in text
    assert "JPEG-LS Lossless" in text and "RLE Lossless" in text
    assert "Duplicate SOP Instance UID: **keep**" in text
    assert "`MOVEDEST`" in text
    assert "maximum PDU received: 1048576 bytes" in text  # the limits, as configured
    assert "at most 64 open, 8 per peer address, and 8 more reserved" in text
    assert "ISO_IR 192" in text  # C-FIND character sets
