"""The DIMSE listener: pynetdicom's threaded association server, with new connections first read
by the greeter (``greeting``) and admitted by ``Admission``, and associations run by the waiting
reactors (``reactor``).

pynetdicom accepts connections in one thread and, on the TLS port, does each TLS handshake there
(one silent peer stalls every other); it then starts two threads per connection before a byte is
read, and counts half-open connections against ``maximum_associations``. Here the accepting
thread only accepts; the handshake and the A-ASSOCIATE-RQ are read by the greeter; and pynetdicom
sees a connection only once its request is whole and a slot is free.
"""

from __future__ import annotations

import socket
import socketserver
import threading
from typing import Any

from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from dicom_node import reactor
from dicom_node.admission import Admission, AssociationLimits, Slot
from dicom_node.greeting import Greeter

UNBOUNDED = 1_000_000  # pynetdicom's own association count: Admission decides instead


class _Greeted:
    __slots__ = ("read_ahead", "slot")

    def __init__(self, read_ahead: bytes, slot: Slot) -> None:
        self.read_ahead = read_ahead
        self.slot = slot


class DimseListener(ThreadedAssociationServer):
    """pynetdicom's server; a connection goes to the greeter, then (admitted) to an association."""

    request_queue_size = 128  # the listen backlog: bursts of connections are accepted, not dropped

    admission: Admission
    greeter: Greeter
    _greeted: dict[socket.socket, _Greeted]

    def get_request(self) -> tuple[socket.socket, Any]:
        assert self.socket is not None
        sock, address = self.socket.accept()
        if self.ssl_context is not None:  # the handshake happens in the greeter, never here
            sock = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def process_request(self, request: Any, client_address: Any) -> None:
        self.greeter.add(request, client_address)

    def hand_off(self, sock: socket.socket, address: Any, read_ahead: bytes, slot: Slot) -> None:
        """An admitted connection: an association thread, its A-ASSOCIATE-RQ already read."""
        sock.settimeout(self.admission.limits.read_timeout_s)
        self._greeted[sock] = _Greeted(read_ahead, slot)
        socketserver.ThreadingMixIn.process_request(self, sock, address)

    def finish_request(self, request: Any, client_address: Any) -> None:
        try:
            super().finish_request(request, client_address)
        except BaseException:
            greeted = self._greeted.pop(request, None)
            if greeted is not None:
                self.admission.release(greeted.slot)
            raise

    def server_close(self) -> None:
        super().server_close()
        greeter = getattr(self, "greeter", None)  # none yet when binding failed: the OSError is the answer
        if greeter is not None:
            greeter.stop()


class _AdmittedRequestHandler(RequestHandler):
    server: DimseListener

    def _create_association(self) -> Association:
        assoc = super()._create_association()
        greeted = self.server._greeted.pop(self.request)
        reactor.make_waiting(assoc, self.server.admission.limits, greeted.read_ahead, greeted.slot,
                             self.server.admission)  # fmt: skip
        return assoc


def start_server(
    ae: AE, address: tuple[str, int], evt_handlers: list[Any], ssl_context: Any = None,
    admission: Admission | None = None,
) -> DimseListener:  # fmt: skip
    """``AE.start_server(address, block=False, ...)``, with the greeter, ``admission`` (default: the
    default limits, no caller mapped) and the waiting reactors."""
    admission = admission or Admission(AssociationLimits(), lambda _: False)
    ae.maximum_associations = UNBOUNDED
    ae.maximum_pdu_size = admission.limits.max_pdu  # announced in A-ASSOCIATE-AC; longer PDUs are refused
    server: DimseListener = ae.make_server(  # type: ignore[assignment]
        address,
        evt_handlers=evt_handlers,
        ssl_context=ssl_context,
        server_class=DimseListener,
        request_handler=_AdmittedRequestHandler,
    )
    server.admission = admission
    server._greeted = {}
    server.greeter = Greeter(admission, server.hand_off, name=f"DicomGreeter@{address[1]}")
    server.greeter.start()
    ae._servers.append(server)
    thread = threading.Thread(target=server.serve_forever, name=f"DicomServer@{address[1]}", daemon=True)
    thread.start()
    return server
