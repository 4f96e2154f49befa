"""The waiting association threads (dicom_node.reactor) behave as pynetdicom's own: storing,
releasing, aborting, timing out an idle peer, surviving a truncated PDU; and they wait instead
of polling."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicom_node import listener, reactor
from dicom_node.sop_classes import DERMOSCOPIC_PHOTOGRAPHY
from tests.dicom_factories import dermoscopic
from tests.dicom_node.conftest import wait_for
from tests.server import free_port

pytestmark = pytest.mark.interop


class Scp:
    def __init__(self, server: listener.DimseListener, port: int) -> None:
        self.server = server
        self.port = port
        self.stored: dict[str, Dataset] = {}
        self.events: list[str] = []

    def associate(self, *, network_timeout: float | None = None) -> Any:
        ae = AE(ae_title="TESTSCU")
        ae.add_requested_context(Verification)
        ae.add_requested_context(DERMOSCOPIC_PHOTOGRAPHY, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", self.port, ae_title="REACTOR")
        assert assoc.is_established
        return assoc


@pytest.fixture
def scp() -> Iterator[Scp]:
    ae = AE(ae_title="REACTOR")
    ae.network_timeout = 1.0
    ae.maximum_pdu_size = 0
    ae.add_supported_context(Verification)
    ae.add_supported_context(DERMOSCOPIC_PHOTOGRAPHY, ExplicitVRLittleEndian)
    port = free_port()
    holder: list[Scp] = []

    def on_store(event: Any) -> int:
        ds = event.dataset
        holder[0].stored[str(ds.SOPInstanceUID)] = ds
        return 0x0000

    def note(name: str) -> Any:
        return lambda event: holder[0].events.append(name)

    handlers = [
        (evt.EVT_C_STORE, on_store),
        (evt.EVT_RELEASED, note("released")),
        (evt.EVT_ABORTED, note("aborted")),
    ]
    server = listener.start_server(ae, ("127.0.0.1", port), handlers)
    holder.append(Scp(server, port))
    try:
        yield holder[0]
    finally:
        server.shutdown()


def test_stores_a_large_instance_whole_and_releases(scp: Scp) -> None:
    ds = dermoscopic()
    rng = np.random.default_rng(7)
    ds.Rows, ds.Columns = 1200, 1600  # 5.8 MB of pixels: one PDU, read in many pieces
    ds.PixelData = rng.integers(0, 256, (1200, 1600, 3), dtype=np.uint8).tobytes()
    assoc = scp.associate()
    assert assoc.send_c_echo().Status == 0x0000
    assert assoc.send_c_store(ds).Status == 0x0000
    assoc.release()
    stored = scp.stored[str(ds.SOPInstanceUID)]
    assert stored.PixelData == ds.PixelData
    assert wait_for(lambda: "released" in scp.events)


def test_a_peer_abort_ends_the_association(scp: Scp) -> None:
    assoc = scp.associate()
    assoc.abort()
    assert wait_for(lambda: "aborted" in scp.events)
    assert wait_for(lambda: not scp.server.active_associations)


def test_an_idle_peer_is_dropped_after_the_network_timeout(scp: Scp) -> None:
    assoc = scp.associate()
    assert wait_for(lambda: not assoc.is_established, seconds=10)  # the SCP aborts after 1 s of silence
    assert wait_for(lambda: not scp.server.active_associations)


def test_a_truncated_pdu_does_not_take_the_node_down(scp: Scp) -> None:
    assoc = scp.associate()
    raw = assoc.dul.socket.socket
    raw.sendall(struct.pack(">BBL", 0x04, 0, 500_000) + b"\0" * 1000)  # a P-DATA-TF claiming 500 kB
    raw.shutdown(socket.SHUT_RDWR)
    assert wait_for(lambda: not scp.server.active_associations)
    assoc.abort()
    raw.close()
    again = scp.associate()
    assert again.send_c_echo().Status == 0x0000
    again.release()


def test_idle_associations_wait_instead_of_polling(scp: Scp, monkeypatch: pytest.MonkeyPatch) -> None:
    """pynetdicom's threads loop about 1,000 times a second each; these wake when there is work, or
    every MAX_WAIT_S (50 ms) to look at the timers."""
    passes = {"dul": 0}
    original = reactor._BlockingDUL._wait

    def counted(self: reactor._BlockingDUL) -> None:
        passes["dul"] += 1
        original(self)

    monkeypatch.setattr(reactor._BlockingDUL, "_wait", counted)
    assoc = scp.associate()
    (acceptor,) = scp.server.active_associations
    assert isinstance(acceptor, reactor._WaitingAssociation)
    passes["dul"] = 0
    time.sleep(0.5)
    assert passes["dul"] <= 20  # polling every millisecond would make it about 500
    assert assoc.send_c_echo().Status == 0x0000
    assoc.release()
