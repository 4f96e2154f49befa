"""New connections, from TCP accept to a whole A-ASSOCIATE-RQ (PS3.8 §9.2, state Sta2).

One thread watches every connection that has not yet sent its A-ASSOCIATE-RQ (and, on the TLS port,
finishes its handshake), reading without blocking. A connection costs no thread and holds no slot
until its request is whole; then ``Admission`` decides on the calling AE title and the peer address,
and the connection is handed to pynetdicom with the request already read. So:

- a connect-and-close costs nothing to anyone else;
- a half-sent request is closed when the ARTIM timer (§9.1.5) runs out (AA-2), as is a refused
  connection whose peer does not close it (Sta13);
- the first PDU's header is checked before its body is read: a type other than A-ASSOCIATE-RQ is
  answered A-ABORT (AA-1), a length above ``ASSOCIATE_RQ_MAX_BYTES`` A-ASSOCIATE-RJ (AE-6: "not
  acceptable"), and nothing more is read;
- connections awaiting their request are bounded per address and in all, the oldest closed first.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dicom_node.admission import ASSOCIATE_RQ_MAX_BYTES, Admission, Slot

log = logging.getLogger(__name__)
PDU_HEADER = struct.Struct(">BBL")  # PDU type, reserved, length of what follows (PS3.8 §9.3.1)
A_ASSOCIATE_RQ = 0x01
ASSOCIATE_RQ_FIXED = 68  # version, reserved, called AE, calling AE, reserved (PS3.8 Table 9-11)
CALLING_AE = slice(PDU_HEADER.size + 20, PDU_HEADER.size + 36)
READ_SIZE = 64 * 1024  # never what a peer's length field says: recv(n) allocates n bytes first
HandOff = Callable[[socket.socket, Any, bytes, Slot], None]


def associate_rj(result: int, source: int, reason: int) -> bytes:
    """An A-ASSOCIATE-RJ PDU (PS3.8 §9.3.4)."""
    return PDU_HEADER.pack(0x03, 0, 4) + bytes((0, result, source, reason))


def a_abort(reason: int) -> bytes:
    """An A-ABORT PDU from the service provider (source 2; PS3.8 §9.3.8)."""
    return PDU_HEADER.pack(0x07, 0, 4) + bytes((0, 0, 2, reason))


LIMIT_EXCEEDED = associate_rj(2, 3, 2)  # rejected-transient, service-provider (presentation), local-limit-exceeded
REQUEST_TOO_LONG = associate_rj(1, 3, 2)  # the same, rejected-permanent: sending it again cannot help
UNEXPECTED_PDU = a_abort(2)
INVALID_PARAMETER = a_abort(6)


@dataclass(eq=False, slots=True)
class _Connection:
    sock: socket.socket
    address: Any
    deadline: float
    handshaken: bool
    received: bytearray = field(default_factory=bytearray)
    answered: bool = False  # refused: awaiting the peer's close (Sta13) until ARTIM runs out

    @property
    def peer(self) -> str:
        return str(self.address[0])

    def wanted(self) -> int:
        """How many more bytes make the request whole (the header first)."""
        if len(self.received) < PDU_HEADER.size:
            return PDU_HEADER.size - len(self.received)
        return PDU_HEADER.size + PDU_HEADER.unpack_from(self.received)[2] - len(self.received)


class Greeter(threading.Thread):
    """The thread that reads new connections' A-ASSOCIATE-RQ; see the module docstring."""

    def __init__(self, admission: Admission, hand_off: HandOff, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.admission = admission
        self._hand_off = hand_off
        self._selector = selectors.DefaultSelector()
        self._waiting: dict[socket.socket, _Connection] = {}  # oldest first
        self._arrivals: list[tuple[socket.socket, Any]] = []
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._stopping = False
        self._last_warning: dict[str, float] = {}

    # -- from other threads ------------------------------------------------------------------
    def add(self, sock: socket.socket, address: Any) -> None:
        """A connection just accepted (called by the accepting thread)."""
        with self._lock:
            self._arrivals.append((sock, address))
        self._wake()

    def stop(self) -> None:
        self._stopping = True
        self._wake()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=5)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # full (a wake-up is pending) or closed (stopped)
            self._wake_w.send(b"\0")

    # -- the thread --------------------------------------------------------------------------
    def run(self) -> None:
        try:
            while not self._stopping:
                self._take_arrivals()
                for key, _ in self._selector.select(self._next_timeout()):
                    if key.fileobj is self._wake_r:
                        with contextlib.suppress(OSError):
                            while self._wake_r.recv(512):
                                pass
                    elif (connection := self._waiting.get(key.fileobj)) is not None:  # type: ignore[call-overload]
                        self._serve(connection)
                self._expire()
        finally:
            for connection in list(self._waiting.values()):
                self._close(connection)
            self._selector.close()
            self._wake_r.close()
            self._wake_w.close()

    def _take_arrivals(self) -> None:
        with self._lock:
            arrivals, self._arrivals = self._arrivals, []
        limits = self.admission.limits
        for sock, address in arrivals:
            connection = _Connection(sock, address, time.monotonic() + limits.artim_s,
                                     handshaken=not isinstance(sock, ssl.SSLSocket))  # fmt: skip
            same_peer = [c for c in self._waiting.values() if c.peer == connection.peer]
            if len(same_peer) >= limits.pending_per_peer:
                self._close(same_peer[0])
            if len(self._waiting) >= limits.max_pending:
                self._close(next(iter(self._waiting.values())))
            try:
                sock.setblocking(False)
                self._selector.register(sock, selectors.EVENT_READ)
            except (OSError, ValueError):
                sock.close()
                continue
            self._waiting[sock] = connection

    def _next_timeout(self) -> float:
        if not self._waiting:
            return 1.0
        first = min(c.deadline for c in self._waiting.values())
        return min(1.0, max(0.0, first - time.monotonic()))

    def _expire(self) -> None:
        now = time.monotonic()
        for connection in [c for c in self._waiting.values() if c.deadline <= now]:
            self._close(connection)  # ARTIM expired in Sta2: AA-2, close the transport connection

    def _serve(self, connection: _Connection) -> None:
        """Read what arrived; whatever goes wrong with one connection closes it, never the greeter."""
        try:
            self._read(connection)
        except Exception:
            log.exception("DICOM connection from %s failed before its association", connection.peer)
            self._close(connection)

    def _read(self, connection: _Connection) -> None:
        while connection.sock in self._waiting:
            try:
                if not connection.handshaken:
                    connection.sock.do_handshake()  # type: ignore[attr-defined]
                    connection.handshaken = True
                data = connection.sock.recv(READ_SIZE if connection.answered else min(connection.wanted(), READ_SIZE))
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                return
            except OSError:  # reset, or a failed TLS handshake
                self._close(connection)
                return
            if not data or connection.answered:
                self._close(connection)  # connect-and-close, or the close (or more) after our refusal
                return
            connection.received += data
            self._examine(connection)
            if not (isinstance(connection.sock, ssl.SSLSocket) and connection.sock.pending()):
                return  # else decrypted bytes wait in the TLS buffer, where select() cannot see them

    def _examine(self, connection: _Connection) -> None:
        received = connection.received
        if len(received) < PDU_HEADER.size:
            return
        pdu_type, _, length = PDU_HEADER.unpack_from(received)
        if pdu_type != A_ASSOCIATE_RQ:
            self._refuse(connection, UNEXPECTED_PDU, f"a PDU of type 0x{pdu_type:02X} before A-ASSOCIATE-RQ")
        elif length > ASSOCIATE_RQ_MAX_BYTES:
            self._refuse(connection, REQUEST_TOO_LONG, f"an A-ASSOCIATE-RQ of {length} bytes")
        elif length < ASSOCIATE_RQ_FIXED:
            self._refuse(connection, INVALID_PARAMETER, f"an A-ASSOCIATE-RQ of {length} bytes")
        elif connection.wanted() == 0:
            self._admit(connection)

    def _admit(self, connection: _Connection) -> None:
        calling_ae = bytes(connection.received[CALLING_AE]).decode("ascii", "replace").strip()
        slot = self.admission.admit(connection.peer, calling_ae)
        if slot is None:
            self._refuse(connection, LIMIT_EXCEEDED, f"association limit reached (calling AE {calling_ae!r})")
            return
        self._forget(connection)
        try:
            connection.sock.setblocking(True)
            self._hand_off(connection.sock, connection.address, bytes(connection.received), slot)
        except Exception:
            log.exception("could not start an association for %s", connection.peer)
            self.admission.release(slot)
            connection.sock.close()

    def _refuse(self, connection: _Connection, answer: bytes, why: str) -> None:
        now = time.monotonic()
        if len(self._last_warning) > 1024:
            self._last_warning.clear()
        if now - self._last_warning.get(connection.peer, -60.0) >= 60.0:  # once a minute per address
            self._last_warning[connection.peer] = now
            log.warning("DICOM connection from %s refused: %s", connection.peer, why)
        try:  # then, as in Sta13, the peer closes or ARTIM does (closing at once could reset the answer away)
            connection.sock.send(answer)
            connection.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(connection)
            return
        connection.answered = True
        connection.deadline = time.monotonic() + self.admission.limits.artim_s

    def _forget(self, connection: _Connection) -> None:
        self._waiting.pop(connection.sock, None)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(connection.sock)

    def _close(self, connection: _Connection) -> None:
        self._forget(connection)
        with contextlib.suppress(OSError):
            connection.sock.close()
