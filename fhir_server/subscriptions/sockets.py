"""One client's websocket for Subscriptions (R4 subscription.html, channel "websocket"):

    client: bind {id}      server: bound {id}       (or: error {status} {reason})
                           server: ping {id}        (on each match; the client then searches)

- A socket may bind at most ``bindings_per_socket`` Subscriptions, each one the client owns
  (``binding.check_bind``), and only while its access token is unexpired; the bindings then last
  until the socket closes, the Subscription stops being active or bindable (checked again before every
  delivery), or the socket reaches ``max_seconds`` (the client reconnects with a fresh token).
- A socket with no binding ``bind_seconds`` after it opened is closed; a client message is text of
  at most ``max_message`` characters. Dead peers are found by the websocket protocol's own pings.
- Deliveries come from the ``feed`` (the subscription worker records matches, possibly in another
  process): after the last event delivered on each binding, at least once, in commit order.
- Every bind (granted or refused) and every ping is audited; a socket is closed after
  ``bindings_per_socket`` refused binds (probing for ids costs a read and an AuditEvent each).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.websockets import WebSocket, WebSocketState

from fhir_server.audit.trail import AuditTrail
from fhir_server.errors import OperationOutcomeError
from fhir_server.security.scopes import Access
from fhir_server.storage.port import TenantStore
from fhir_server.subscriptions import feed
from fhir_server.subscriptions.audit import binding_event, notification_event
from fhir_server.subscriptions.binding import ID, BindRefused, check_bind
from fhir_server.waiting import woken

log = logging.getLogger(__name__)
POLICY_VIOLATION = 1008  # RFC 6455 section 7.4.1
MESSAGE_TOO_BIG = 1009
NORMAL = 1000


@dataclass(frozen=True, slots=True)
class SocketLimits:
    sockets_per_client: int = 4
    bindings_per_socket: int = 16
    max_message: int = 256
    bind_seconds: float = 30.0
    max_seconds: float = 3600.0
    poll_seconds: float = 1.0  # the feed is read at least this often (at once when the worker shares the process)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who opened the socket: the token's access (None: authentication off) and when the token expires."""

    access: Access | None
    expires: float | None
    peer: str

    @property
    def key(self) -> tuple[str, str, str]:
        if self.access is None:
            return ("", "anonymous", "")
        return (self.access.tenant, self.access.subject, self.access.issuer or "")

    @property
    def label(self) -> str:
        return self.access.subject if self.access is not None else "anonymous (authentication off)"


class SocketHub:
    """The sockets this process holds: counts per client, and the wake-ups from the worker's feed."""

    def __init__(self, audit: AuditTrail | None, limits: SocketLimits | None = None) -> None:
        self.audit = audit
        self.limits = limits or SocketLimits()
        self._open: Counter[tuple[str, str, str]] = Counter()
        self._wakes: set[asyncio.Event] = set()

    def wake(self, tenant: str, subscription_id: str) -> None:
        """The worker of this process recorded a feed entry: look now rather than at the next poll."""
        for event in self._wakes:
            event.set()

    def check_room(self, caller: Caller) -> None:
        """429 when the client already holds ``sockets_per_client`` sockets in this process."""
        if self._open[caller.key] >= self.limits.sockets_per_client:
            raise OperationOutcomeError.of(
                429, "throttled", f"at most {self.limits.sockets_per_client} subscription websockets per client"
            )

    @contextlib.contextmanager
    def admitted(self, caller: Caller) -> Iterator[asyncio.Event]:
        """Count the socket against its client's cap while it is open; yields its wake-up event."""
        self._open[caller.key] += 1
        wake = asyncio.Event()
        self._wakes.add(wake)
        try:
            yield wake
        finally:
            self._wakes.discard(wake)
            self._open[caller.key] -= 1
            if not self._open[caller.key]:
                del self._open[caller.key]

    async def record(self, store: TenantStore, event: dict[str, Any]) -> None:
        if self.audit is not None:
            await self.audit.record(store, event)


class Session:
    """One accepted socket: reads ``bind`` messages and delivers pings until either side ends it."""

    def __init__(self, hub: SocketHub, websocket: WebSocket, store: TenantStore, caller: Caller) -> None:
        self.hub = hub
        self.limits = hub.limits
        self.websocket = websocket
        self.store = store
        self.caller = caller
        self.bindings: dict[str, int] = {}  # Subscription id -> the last event delivered on it
        self.refused = 0
        self._sending = asyncio.Lock()

    async def run(self, wake: asyncio.Event) -> None:
        tasks = [asyncio.create_task(self._receive()), asyncio.create_task(self._deliver(wake))]
        try:
            done, _ = await asyncio.wait(tasks, timeout=self.limits.max_seconds, return_when=asyncio.FIRST_COMPLETED)
            if not done:
                await self._close(NORMAL, "socket lifetime reached: reconnect with a fresh token")
            for task in done:
                task.result()  # a fault of ours is logged by the caller
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _receive(self) -> None:
        opened = time.monotonic()
        while True:
            timeout = None if self.bindings else max(0.0, opened + self.limits.bind_seconds - time.monotonic())
            try:
                async with asyncio.timeout(timeout):  # not wait_for: see fhir_server.waiting
                    message = await self.websocket.receive()
            except TimeoutError:
                await self._close(POLICY_VIOLATION, f"no bind within {self.limits.bind_seconds:g} s")
                return
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None or len(text) > self.limits.max_message:
                await self._send(f"error 400 a message is text of at most {self.limits.max_message} characters")
                await self._close(MESSAGE_TOO_BIG, "message too big or not text")
                return
            await self._handle(text.strip())
            if self.websocket.application_state != WebSocketState.CONNECTED:
                return

    async def _handle(self, text: str) -> None:
        verb, _, argument = text.partition(" ")
        if verb != "bind":
            await self._send("error 400 the only message is: bind {subscription id}")
            return
        subscription_id = argument.strip()
        try:
            await self._bind(subscription_id)
        except BindRefused as exc:
            await self._send(f"error {exc.status} {exc}")
            await self._audit_bind(subscription_id, "4", str(exc))
            self.refused += 1
            if self.refused >= self.limits.bindings_per_socket:  # probing ids: each refusal costs a read and an audit
                await self._close(POLICY_VIOLATION, "too many refused binds")
            return
        await self._send(f"bound {subscription_id}")
        await self._audit_bind(subscription_id, "0", "bound")

    async def _bind(self, subscription_id: str) -> None:
        if self.caller.expires is not None and time.time() >= self.caller.expires:
            raise BindRefused(401, "the access token has expired: reconnect with a fresh one")
        if subscription_id not in self.bindings and len(self.bindings) >= self.limits.bindings_per_socket:
            raise BindRefused(429, f"at most {self.limits.bindings_per_socket} bindings per socket")
        await check_bind(self.store, self.caller.access, subscription_id, datetime.now(UTC))
        self.bindings.setdefault(subscription_id, await feed.latest(self.store, subscription_id))

    async def _deliver(self, wake: asyncio.Event) -> None:
        while True:
            await woken(wake, self.limits.poll_seconds)
            wake.clear()  # before reading: an entry recorded during the read wakes the next round
            for subscription_id, last in list(self.bindings.items()):
                await self._deliver_one(subscription_id, last)

    async def _deliver_one(self, subscription_id: str, last: int) -> None:
        entries = await feed.after(self.store, subscription_id, last)
        if not entries:
            return
        try:  # still active, not ended, still this client's (a PUT by another client changes the owner)
            await check_bind(self.store, self.caller.access, subscription_id, datetime.now(UTC))
        except BindRefused as exc:
            del self.bindings[subscription_id]
            await self._send(f"error {exc.status} unbound: {exc}")
            return
        for seq, about in entries:
            await self._send(f"ping {subscription_id}")
            self.bindings[subscription_id] = seq
            event = notification_event(
                subscription_id, self.caller.label, about, f"websocket {self.caller.peer}", "0", "ping sent"
            )
            await self.hub.record(self.store, event)

    async def _audit_bind(self, subscription_id: str, outcome: str, description: str) -> None:
        shown = subscription_id if ID.match(subscription_id) else "(not an id)"
        event = binding_event(shown, self.caller.label, f"websocket {self.caller.peer}", outcome, description)
        await self.hub.record(self.store, event)

    async def _send(self, text: str) -> None:
        async with self._sending:
            await self.websocket.send_text(text)

    async def _close(self, code: int, reason: str) -> None:
        async with self._sending:
            if self.websocket.application_state == WebSocketState.CONNECTED:
                await self.websocket.close(code, reason)
