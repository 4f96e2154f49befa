"""Real endpoints for notification tests: an HTTP server (the EHR's rest-hook) and an SMTP server
(aiosmtpd), each on a loopback ephemeral port, recording what they receive."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from tests.server import free_port


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Until ``condition()`` holds (generous bound; polling, not a sleep that hopes)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.time)  # when it arrived (wall clock: compared with meta.lastUpdated)


@dataclass
class HookServer:
    url: str
    received: list[Received] = field(default_factory=list)
    fail_next: int = 0  # answer 503 to this many requests first
    attempts: int = 0


@contextmanager
def hook_server() -> Iterator[HookServer]:
    hook = HookServer("")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with lock:
                hook.attempts += 1
                failing = hook.fail_next > 0
                if failing:
                    hook.fail_next -= 1
                else:
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    hook.received.append(Received(self.command, self.path, headers, body))
            self.send_response(503 if failing else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_POST = do_PUT = _handle

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hook.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], EmailMessage]] = []
        self.refusing = False  # answer 451 (try again later, RFC 5321 4.2.5) to every message
        self.attempts = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.attempts += 1
        if self.refusing:
            return "451 4.3.0 Mailbox temporarily unavailable"
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append((list(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"


@contextmanager
def smtp_server(tls: str = "none", certificate: tuple[Path, Path] | None = None) -> Iterator[tuple[int, Inbox]]:
    """An SMTP server; ``tls`` starttls (required before mail) or implicit needs ``certificate``."""
    inbox = Inbox()
    port = free_port()
    options: dict[str, Any] = {}
    if tls != "none":
        assert certificate is not None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*certificate)
        options = {"tls_context": context, "require_starttls": True} if tls == "starttls" else {"ssl_context": context}
    controller = Controller(inbox, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        yield port, inbox
    finally:
        controller.stop()
