"""The worklist's live update: server-sent events at ``/app/events`` (HTML Living Standard, 9.2 Server-sent
events), same origin, authorised by the session cookie like every page of the app.

- The store's commit listener (every commit that appended outbox events; with PostgreSQL, commits of every
  process through LISTEN/NOTIFY) wakes the open streams of that tenant. Each stream then reads the tenant's
  latest Task change (``Task/_history``, one row) and, if it moved, sends ``event: worklist`` with no data of
  the case in it. The page then fetches the worklist again as the signed-in person: what the reviewer sees
  is decided by the AccessPolicy of that page read, never by the event stream.
- Bounded: at most ``MAX_STREAMS_PER_SESSION`` streams per session (a new one ends the session's oldest
  with ``event: replaced``, which the page does not reconnect) and ``MAX_STREAMS`` in all (429 beyond); a
  heartbeat comment every ``HEARTBEAT_S`` (proxies close idle connections; a client that went away is noticed
  when that write fails); the session is checked every ``SESSION_CHECK_S``: a signed-out or expired session
  gets ``event: ended`` and the stream closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from fhir_server.people.signed_in import Principal, SignedInUser
from fhir_server.storage.port import Engine, HistoryQuery
from fhir_server.waiting import woken

MAX_STREAMS_PER_SESSION = 4
MAX_STREAMS = 500
HEARTBEAT_S = 15.0
SESSION_CHECK_S = 2.0
RETRY_MS = 5000  # the browser's reconnection delay (EventSource)

router = APIRouter(prefix="/app", include_in_schema=False)
Mark = tuple[int, str, int]  # Task history total, newest Task id, its version


@dataclass(eq=False)
class Stream:
    """One open stream: woken by its tenant's commits; ``replaced`` when a newer one of its session needs room."""

    wake: asyncio.Event = field(default_factory=asyncio.Event)
    replaced: bool = False


class WorklistChanges:
    """Wakes the open worklist streams of a tenant on each of its commits; keeps each session's streams."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._waiters: dict[str, set[Stream]] = {}
        self._sessions: dict[str, list[Stream]] = {}  # oldest first
        self._loop: asyncio.AbstractEventLoop | None = None
        engine.add_commit_listener(self._on_commit)

    def _on_commit(self, tenant: str) -> None:
        if self._loop is not None and not self._loop.is_closed() and self._waiters.get(tenant):
            self._loop.call_soon_threadsafe(self._wake, tenant)

    def _wake(self, tenant: str) -> None:
        for stream in self._waiters.get(tenant, ()):
            stream.wake.set()

    async def mark(self, tenant: str) -> Mark:
        """Where the tenant's Tasks stand: changes when any Task is created, updated or deleted."""
        page = await (await self.engine.tenant(tenant)).history(HistoryQuery(resource_type="Task", count=1))
        newest = page.versions[0] if page.versions else None
        return (page.total, newest.id if newest else "", newest.version if newest else 0)

    def admit(self, session_key: str) -> bool:
        """Room for one more stream in all? A session at its limit makes room by ending its oldest stream (a page
        left a moment ago is noticed only at its next heartbeat; the newest page is the one being looked at)."""
        if sum(len(streams) for streams in self._sessions.values()) >= MAX_STREAMS:
            return False
        live = [s for s in self._sessions.get(session_key, []) if not s.replaced]
        for oldest in live[: max(0, len(live) - MAX_STREAMS_PER_SESSION + 1)]:
            oldest.replaced = True
            oldest.wake.set()
        return True

    @contextmanager
    def listening(self, tenant: str, session_key: str) -> Iterator[Stream]:
        self._loop = asyncio.get_running_loop()
        stream = Stream()
        self._waiters.setdefault(tenant, set()).add(stream)
        self._sessions.setdefault(session_key, []).append(stream)
        try:
            yield stream
        finally:
            self._waiters[tenant].discard(stream)
            self._sessions[session_key].remove(stream)
            if not self._sessions[session_key]:
                del self._sessions[session_key]


class EventStream(StreamingResponse):
    """A stream that ends when its generator does or a write fails (the client went away), never on a
    ``http.disconnect`` read while it runs: behind this server's protocol that read answered at once, which
    ended every stream after its first event."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with contextlib.suppress(OSError):
            await self.stream_response(send)


def _session_key(me: Principal) -> str:
    return hashlib.sha256(me.session.secret.encode()).hexdigest()  # the secret itself is not kept


async def _events(request: Request, me: Principal, changes: WorklistChanges) -> AsyncIterator[str]:
    sessions = request.app.state.people.sessions
    with changes.listening(me.tenant, _session_key(me)) as stream:
        yield f"retry: {RETRY_MS}\n\n"
        last = await changes.mark(me.tenant)
        beat = time.monotonic() + HEARTBEAT_S
        commit = stream.wake
        while True:
            await woken(commit, SESSION_CHECK_S)
            if stream.replaced:
                yield "event: replaced\ndata: a newer page of this session follows the worklist\n\n"
                return
            if await sessions.current(me.session.secret) is None:
                yield "event: ended\ndata: signed out\n\n"
                return
            if commit.is_set():
                commit.clear()
                now = await changes.mark(me.tenant)
                if now != last:
                    last = now
                    yield "event: worklist\ndata: changed\n\n"
            if time.monotonic() >= beat:
                beat = time.monotonic() + HEARTBEAT_S
                yield ": heartbeat\n\n"


@router.get("/events")
async def events(request: Request, me: SignedInUser) -> Response:
    """The signed-in reviewer's worklist change notifications (text/event-stream)."""
    changes: WorklistChanges = request.app.state.worklist_changes
    if not changes.admit(_session_key(me)):
        return Response("too many open worklist streams", 429, media_type="text/plain", headers={"Retry-After": "30"})
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no", "X-Content-Type-Options": "nosniff"}
    return EventStream(_events(request, me, changes), media_type="text/event-stream", headers=headers)
