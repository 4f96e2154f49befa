"""Association threads that sleep until there is work, instead of polling every millisecond.

pynetdicom 3.0 runs two threads for each accepted association, and both poll: the DUL thread
sleeps 1 ms whenever a pass found nothing to read or send, the association thread sleeps 1 ms
on every pass. Four open associations make 8,000 wake-ups a second, each one taking the GIL
from whatever thread is storing an instance (measured: four idle associations cost the node
23% of a core, and under load the GIL hand-offs cost more).

Here both threads block until something happens:

- the DUL thread in ``select()`` on its socket and on a wake-up socket pair, written when
  another thread queues a primitive for it to send or asks it to stop;
- the association thread on an ``Event``, set when the DUL hands it a DIMSE message or an
  ACSE primitive, or when the DUL thread ends.

Both waits are bounded (``MAX_WAIT_S``) so that pynetdicom's timers (ARTIM, the network idle
timeout) still fire. The state machine, PDU handling and DIMSE services stay pynetdicom's own.

Each PDU's header is checked before its body is read: one longer than the Maximum Length Received
we announced (PS3.8 §9.3.1, D.1) is an invalid PDU (Evt19: A-ABORT, AA-8) and the connection is
closed without reading it. A PDU must arrive whole within ``read_timeout_s`` of its first byte.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, cast

from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.transport import AddressInformation, AssociationSocket

from dicom_node.admission import Admission, AssociationLimits, Slot
from dicom_node.greeting import PDU_HEADER

log = logging.getLogger(__name__)
MAX_WAIT_S = 0.05
PREALLOCATE = 16 * 1024 * 1024  # a PDU's length comes from the peer: never allocate more than this ahead of its bytes


class _WakingQueue(queue.Queue[Any]):
    """A queue that calls ``wake`` after every ``put``."""

    def __init__(self, wake: Callable[[], None]) -> None:
        super().__init__()
        self._wake = wake

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._wake()


def _adopt(old: queue.Queue[Any], wake: Callable[[], None]) -> _WakingQueue:
    new = _WakingQueue(wake)
    new.queue.extend(old.queue)
    return new


class _BlockingDUL(DULServiceProvider):
    """pynetdicom's DUL, its reactor waiting in select() when it has nothing to do."""

    def __init__(
        self, assoc: Association, replaced: DULServiceProvider, wake_user: Callable[[], None], max_pdu: int
    ) -> None:
        super().__init__(assoc)
        self._max_pdu = max_pdu
        self._refused = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.socket = replaced.socket
        self._idle_timer.timeout = replaced._idle_timer.timeout
        self.artim_timer.timeout = replaced.artim_timer.timeout
        self.to_provider_queue = _adopt(replaced.to_provider_queue, self._wake_from_outside)
        self.event_queue = _adopt(replaced.event_queue, self._wake_from_outside)  # holds Evt5 (connection open)
        self.to_user_queue = _adopt(replaced.to_user_queue, wake_user)
        self._wake_user = wake_user

    def _wake_from_outside(self) -> None:
        if threading.current_thread() is not self:
            self.wake()

    def wake(self) -> None:
        # OSError: the pair is full (a wake-up is already pending) or closed (the reactor is gone)
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def kill_dul(self) -> None:
        super().kill_dul()
        self.wake()

    def stop_dul(self) -> bool:
        if self.state_machine.current_state != "Sta1":
            return False
        self._kill_thread = True
        self.wake()
        if threading.current_thread() is not self:
            self.join()
        return True

    def run_reactor(self) -> None:
        try:
            self._react()
        finally:
            self._wake_r.close()
            self._wake_w.close()
            self._wake_user()  # the association thread notices that the DUL has ended

    def _react(self) -> None:
        self._idle_timer.start()
        while not self._kill_thread:
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")
            try:
                # one primitive to send, or one PDU received, per pass (as in pynetdicom)
                if self._process_recv_primitive():
                    pass
                elif self._is_transport_event():
                    self._idle_timer.restart()
            except Exception:
                log.exception("DUL reactor failed; aborting the association")
                self._abort()
                return
            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                self._wait()
                continue
            self.state_machine.do_action(event)

    def _read_pdu_data(self) -> None:
        """pynetdicom's, once the header says the PDU is not longer than we accept; the whole PDU
        within the read timeout of its first byte."""
        transport = cast(_BulkReadingSocket, self.socket)
        timeout = transport.read_timeout_s
        transport.pdu_deadline = None if timeout is None else time.monotonic() + timeout
        try:
            self._read_bounded_pdu(transport)
        finally:
            transport.pdu_deadline = None

    def _read_bounded_pdu(self, transport: _BulkReadingSocket) -> None:
        try:
            header = transport.recv(PDU_HEADER.size)
        except OSError:
            self.event_queue.put("Evt17")
            return
        if len(header) == PDU_HEADER.size and PDU_HEADER.unpack(header)[2] > self._max_pdu:
            log.warning("refused a PDU of %d bytes (more than %d) from %s: aborting the association",
                        PDU_HEADER.unpack(header)[2], self._max_pdu, self.assoc.requestor.address)  # fmt: skip
            self._refused = True
            self.event_queue.put("Evt19")  # invalid PDU: A-ABORT (AA-8)
            return
        transport.unread(header)
        super()._read_pdu_data()

    def _is_transport_event(self) -> bool:
        if self._refused and self.state_machine.current_state == "Sta13":
            cast(AssociationSocket, self.socket).close()  # the A-ABORT is sent: read nothing more of it
            return True
        return super()._is_transport_event()

    def _wait(self) -> None:
        if not self.to_provider_queue.empty() or not self.event_queue.empty():
            return
        if isinstance(self.socket, _BulkReadingSocket) and self.socket.has_unread:
            return
        watched: list[Any] = [self._wake_r]
        transport = self.socket
        peer = transport.socket if transport is not None and transport._is_connected else None
        if peer is not None:
            if isinstance(peer, ssl.SSLSocket) and peer.pending():
                return  # decrypted bytes wait in the TLS buffer, where select() cannot see them
            watched.append(peer)
        try:
            ready, _, _ = select.select(watched, [], [], MAX_WAIT_S)
        except (OSError, ValueError):
            return  # the socket was closed under us: the next pass reads the closure
        if self._wake_r in ready:
            with contextlib.suppress(OSError):  # BlockingIOError once drained
                while self._wake_r.recv(512):
                    pass

    def _abort(self) -> None:
        """What pynetdicom's reactor does on an unexpected error: an A-ABORT, bypassing the state machine."""
        abort = A_ABORT_RQ()
        abort.source = 0x02
        abort.reason_diagnostic = 0x00
        if self.socket is not None:
            self.socket.send(abort.encode())
        self.assoc.is_aborted = True
        self.assoc.is_established = False
        self.assoc._kill = True
        self._kill_thread = True


class _WaitingAssociation(Association):
    """An acceptor association whose reactor waits on an Event instead of sleeping 1 ms a pass."""

    _activity: threading.Event
    _slot: Slot | None
    _admission: Admission | None
    _after: list[Callable[[], None]]

    def after_request(self, work: Callable[[], None]) -> None:
        """Run ``work`` on this association's thread once the request being served was answered (its response
        queued whole before anything ``work`` sends): a Storage Commitment SCP's N-EVENT-REPORT (PS3.4 J.3.3)."""
        self._after.append(work)

    def _run_after(self) -> None:
        while self._after:
            work = self._after.pop(0)
            self._is_paused = True  # as pynetdicom does around a service: ``work`` may use the send_*() methods
            try:
                work()
            except Exception:
                log.exception("work after a DIMSE request failed")
            finally:
                self._is_paused = False

    def run(self) -> None:
        try:
            super().run()
        finally:
            if self._admission is not None and self._slot is not None:
                self._admission.release(self._slot)

    def kill(self) -> None:
        self._activity.set()
        super().kill()

    def _run_reactor(self) -> None:
        self._is_paused = False
        busy = True
        while not self._kill:
            if not busy:
                self._activity.wait(MAX_WAIT_S)
            self._activity.clear()
            self._is_paused = True
            self._reactor_checkpoint.wait()  # paused while a handler sends on this association (C-GET)
            self._is_paused = False
            context_id, message = self.dimse.get_msg(block=False)
            busy = message is not None
            if message is not None:
                self._serve_request(message, int(context_id or 0))
                self._run_after()
            if self._finished():
                return

    def _finished(self) -> bool:
        """pynetdicom's end-of-association checks, in its order: release, abort, DUL gone, idle timeout."""
        if self.is_established and self.acse.is_release_requested():
            self.acse.send_release(is_response=True)
            self.is_released = True
            self.is_established = False
            evt.trigger(self, evt.EVT_RELEASED, {})
        elif self.acse.is_aborted():
            self.dul.receive_pdu(wait=False)  # so that EVT_ACSE_RECV fires
            self.is_aborted = True
            self.is_established = False
            evt.trigger(self, evt.EVT_ABORTED, {})
        elif not self.dul.is_alive():
            pass
        elif self.dul.idle_timer_expired():
            log.error("DICOM network timeout reached")
            if self.network_timeout_response == "A-RELEASE":
                self._is_paused = True
                self._reactor_checkpoint.wait()
                self.release()
                self._is_paused = False
            else:
                self.abort()
        else:
            return False
        self.kill()
        return True


class ClosingSocket(AssociationSocket):
    """pynetdicom's socket, closed even when ``shutdown`` fails (a peer that reset first, or a connection that
    was refused: pynetdicom would leave those open until garbage collection)."""

    def _shutdown_socket(self) -> None:
        if self.socket is not None:
            with contextlib.suppress(OSError):
                self.socket.shutdown(socket.SHUT_RDWR)
            self.socket.close()


class ClosingAE(AE):
    """An AE for the node's outgoing associations (forwarding, Storage Commitment reports) whose sockets are
    closed even when their connection was refused (``ClosingSocket``)."""

    def _create_socket(self, assoc: Association, address: AddressInformation, tls_args: Any) -> AssociationSocket:
        sock = ClosingSocket(assoc, address=address)
        sock.tls_args = tls_args
        return sock


class _BulkReadingSocket(ClosingSocket):
    """pynetdicom's socket, reading a PDU in as few ``recv`` calls as the kernel allows.

    pynetdicom reads 4 KiB per call: 225 calls (and as many GIL hand-offs) for one 640x480
    colour image. Here each call takes everything the kernel has, up to the PDU's end. Bytes read
    ahead (the A-ASSOCIATE-RQ the greeter read, a header put back) are returned first. A PDU not
    whole within ``read_timeout_s`` of its first byte raises TimeoutError (the DUL's Evt17)."""

    _unread: bytearray
    read_timeout_s: float | None
    pdu_deadline: float | None = None  # while the DUL reads one PDU: when it must be whole

    @property
    def has_unread(self) -> bool:
        return bool(self._unread)

    @property
    def ready(self) -> bool:
        return self.has_unread or bool(AssociationSocket.ready.fget(self))  # type: ignore[attr-defined]

    def unread(self, data: bytes | bytearray) -> None:
        self._unread[:0] = data

    def recv(self, nr_bytes: int) -> bytearray:
        sock = cast(socket.socket, self.socket)
        buffer = bytearray(min(nr_bytes, PREALLOCATE))
        received = min(nr_bytes, len(self._unread))
        buffer[:received] = self._unread[:received]
        del self._unread[:received]
        deadline = self.pdu_deadline
        if deadline is None and self.read_timeout_s is not None:
            deadline = time.monotonic() + self.read_timeout_s
        while received < nr_bytes:
            if received == len(buffer):
                buffer.extend(bytes(min(nr_bytes - received, PREALLOCATE)))
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"a PDU not received whole within {self.read_timeout_s} s")
                sock.settimeout(remaining)
            with memoryview(buffer)[received:] as window:
                count = sock.recv_into(window)
            if not count:
                break  # the peer closed the connection: the caller sees a short read
            received += count
        if deadline is not None:
            sock.settimeout(self.read_timeout_s)  # what sends wait for a peer that does not read
        del buffer[received:]
        return buffer


def make_waiting(
    assoc: Association, limits: AssociationLimits, read_ahead: bytes = b"", slot: Slot | None = None,
    admission: Admission | None = None,
) -> None:  # fmt: skip
    """Give an acceptor association (built by pynetdicom, not started) the waiting reactors above.

    pynetdicom builds the Association (and its DUL) itself, inside RequestHandler; its class is
    narrowed afterwards to the subclass, which adds methods only, and its DUL (not started yet)
    is replaced by the blocking one. ``slot`` is released to ``admission`` when the association ends."""
    activity = threading.Event()
    assoc.__class__ = _WaitingAssociation
    transport = cast(_BulkReadingSocket, assoc.dul.socket)
    transport.__class__ = _BulkReadingSocket
    transport._unread = bytearray(read_ahead)
    transport.read_timeout_s = limits.read_timeout_s
    assoc._activity = activity  # type: ignore[attr-defined]
    assoc._slot = slot  # type: ignore[attr-defined]
    assoc._admission = admission  # type: ignore[attr-defined]
    assoc._after = []  # type: ignore[attr-defined]
    assoc.dul = _BlockingDUL(assoc, assoc.dul, activity.set, limits.max_pdu)
    assoc.acse_timeout = limits.artim_s  # also the DUL's ARTIM (Sta13: awaiting the peer's close)
    assoc.dimse.msg_queue = _adopt(assoc.dimse.msg_queue, activity.set)
