"""uvicorn's httptools protocol with read deadlines (RFC 9112 section 9.8; the slowloris defence).

uvicorn times out idle keep-alive connections but not a request that is being received: a client
that opens a connection and sends half a request line, half its headers or half its body holds the
connection (and its memory) forever. Here a request's line and headers must arrive within
``header_timeout`` of its first byte (or of the connection, for the first request) and be at most
``max_header_bytes`` long (else 408 or 431, then close), and its body may pause at most
``body_timeout`` between chunks (else the connection is closed: the handler sees a disconnect).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Literal

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from dermbridge.settings import Settings

log = logging.getLogger(__name__)

_Reading = Literal["head", "body", "none"]


def _refusal(status: bytes, diagnostics: str) -> bytes:
    body = (
        '{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"timeout","diagnostics":"'
        + diagnostics
        + '"}]}'
    ).encode()
    head = b"HTTP/1.1 " + status + b"\r\ncontent-type: application/fhir+json\r\nconnection: close\r\n"
    return head + b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body


class DeadlineHttpProtocol(HttpToolsProtocol):
    """HttpToolsProtocol that closes requests which arrive too slowly or with too large a head."""

    header_timeout = 10.0
    body_timeout = 30.0
    max_header_bytes = 65536

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._reading: _Reading = "head"
        self._head_bytes = 0
        self._tail = b""  # the last bytes of the head so far: its blank line may straddle two reads

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._reading == "head":
            if self._deadline is None:  # the first bytes after a keep-alive pause
                self._arm(self.header_timeout)
            self._head_bytes += self._head_part(data)
            if self._head_bytes > self.max_header_bytes:
                self._refuse(b"431 Request Header Fields Too Large", "the request head is too large")
                return
        super().data_received(data)
        if self._reading == "body":
            self._arm(self.body_timeout)

    def _head_part(self, data: bytes) -> int:
        """How many of ``data``'s bytes belong to the head: up to its blank line (RFC 9112 section 2.1).
        A read may bring the head and the start of the body together; the body is not the head."""
        seen = self._tail + data
        end = seen.find(b"\r\n\r\n")
        self._tail = seen[-3:]
        return len(data) if end < 0 else max(0, end + 4 - (len(seen) - len(data)))

    def on_message_begin(self) -> None:
        super().on_message_begin()  # called from data_received, after its bytes were counted
        self._reading = "head"

    def on_headers_complete(self) -> None:
        self._reading = "body"
        self._arm(self.body_timeout)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._reading = "none"
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._reading, self._head_bytes, self._tail = "head", 0, b""  # the next request's bytes count from here

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self._reading == "head" and self._head_bytes:
            self._refuse(b"408 Request Timeout", "the request line and headers did not arrive in time")
        elif self._reading == "body":
            log.info("closing %s: its request body stalled", self.client)
            self.transport.close()
        elif self._reading == "head":
            self.transport.close()  # a connection that never sent a request

    def _refuse(self, status: bytes, diagnostics: str) -> None:
        self._reading = "none"
        self._disarm()
        self.transport.write(_refusal(status, diagnostics))
        self.transport.close()


def deadline_protocol(settings: Settings) -> type[DeadlineHttpProtocol]:
    """The protocol class for ``uvicorn.run(http=...)`` with the settings' deadlines and head size."""
    return type(
        "ConfiguredDeadlineHttpProtocol",
        (DeadlineHttpProtocol,),
        {
            "header_timeout": settings.http_header_timeout_seconds,
            "body_timeout": settings.http_body_timeout_seconds,
            "max_header_bytes": settings.http_max_header_bytes,
        },
    )
