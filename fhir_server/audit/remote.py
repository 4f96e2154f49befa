"""The audit loader process: staged AuditEvents loaded into the tenant stores off the API's GIL.

The API process stages every AuditEvent itself, durably, before it answers (``AuditTrail.record``):
one insert into the tenant's staging log, in a group commit on a thread of its own. Loading the
staged events into the tenant's store (stored, chained and indexed: ``AuditTrail.flush``) costs
several times more CPU, mostly in SQLite and the kernel, and nothing waits for it. So a loader
process does it: the API tells it which tenants have staged events, at most once per
``NOTIFY_EVERY_S`` per tenant, and the loader flushes each a moment later.

Frames, API -> loader only: 4 bytes of big-endian length, then JSON. First the settings the
loader opens the engine with, then ``{"tenant": name}`` notices. The loader stops when its stdin
closes, after loading everything staged. If it is gone, the API loads its tenants itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson

log = logging.getLogger(__name__)
HEADER = struct.Struct(">I")
MAX_FRAME = 64 * 1024 * 1024
CLOSE_TIMEOUT_S = 60.0  # to load what is staged once its stdin closes
STOP_TIMEOUT_S = 10.0  # to exit after SIGTERM, and again after SIGKILL
NOTIFY_EVERY_S = 0.25


def frame(message: Any) -> bytes:
    body = orjson.dumps(message)
    return HEADER.pack(len(body)) + body


async def read_frame(reader: asyncio.StreamReader) -> Any:
    """The next message, or None at the end of the stream."""
    try:
        header = await reader.readexactly(HEADER.size)
    except asyncio.IncompleteReadError:
        return None
    (size,) = HEADER.unpack(header)
    if size > MAX_FRAME:
        raise ValueError(f"an audit loader frame of {size} bytes")
    return orjson.loads(await reader.readexactly(size))


class LoaderProcess:
    """The API's end: starts the loader process, tells it which tenants have staged events."""

    def __init__(
        self,
        command: Sequence[str],
        init: Any,
        close_timeout: float = CLOSE_TIMEOUT_S,
        stop_timeout: float = STOP_TIMEOUT_S,
    ) -> None:
        self._command = list(command)
        self._init = init
        self._close_timeout = close_timeout
        self._stop_timeout = stop_timeout
        self._process: asyncio.subprocess.Process | None = None
        self._watch: asyncio.Task[None] | None = None
        self._notified: dict[str, float] = {}
        self._trailing: dict[str, asyncio.TimerHandle] = {}
        self.alive = False

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def start(self) -> None:
        self._process = await asyncio.create_subprocess_exec(*self._command, stdin=asyncio.subprocess.PIPE)
        assert self._process.stdin is not None
        self._process.stdin.write(frame(self._init))
        self.alive = True
        self._watch = asyncio.create_task(self._watch_exit(self._process), name="audit-loader-exit")

    def notify(self, tenant: str) -> bool:
        """Tell the loader ``tenant`` has staged events; False if the loader is gone.

        Within ``NOTIFY_EVERY_S`` of a notice, one more notice follows at the end of that time:
        every staged event is noticed within it, however the loader's flushes fall."""
        if not self.alive:
            return False
        if tenant in self._trailing:
            return True
        wait = self._notified.get(tenant, -NOTIFY_EVERY_S) + NOTIFY_EVERY_S - time.monotonic()
        if wait > 0:
            self._trailing[tenant] = asyncio.get_running_loop().call_later(wait, self._send, tenant)
            return True
        return self._send(tenant)

    def _send(self, tenant: str) -> bool:
        self._trailing.pop(tenant, None)
        self._notified[tenant] = time.monotonic()
        if not self.alive or self._process is None or self._process.stdin is None:
            return False
        try:
            self._process.stdin.write(frame({"tenant": tenant}))
        except (ConnectionError, RuntimeError) as exc:  # the pipe is closed: the loader is gone
            self._gone(f"writing to it failed: {exc}")
            return False
        return True

    async def _watch_exit(self, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        self._gone(f"it exited with status {code}")

    def _gone(self, why: str) -> None:
        if self.alive:
            log.error("the audit loader process is gone (%s); staged AuditEvents are loaded in process", why)
        self.alive = False

    async def close(self) -> None:
        """Ask the loader to finish (it loads what is staged) and wait for it to exit; past
        ``close_timeout`` terminate it, then kill it, each waited for at most ``stop_timeout``.

        Every wait is bounded: a loader stopped early loses nothing, since its events stay staged
        (durably) and this process loads every tenant it recorded in ``AuditTrail.close``. The
        stdin pipe is dropped before the signals: asyncio's ``wait()`` also waits for that pipe to
        close, which a loader that no longer reads it (or a process holding a copy of it) prevents."""
        process = self._process
        if process is None:
            return
        self.alive = False
        self._process = None
        for handle in self._trailing.values():
            handle.cancel()  # the loader loads everything staged as it stops
        self._trailing.clear()
        stdin = process.stdin
        if stdin is not None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                stdin.close()
        if not await _exited(process, self._close_timeout):
            log.error("the audit loader did not finish within %.0f s; terminating it", self._close_timeout)
            if stdin is not None:
                stdin.transport.abort()  # unsent notices: this process loads what it recorded
            if not await _stopped(process, process.terminate, self._stop_timeout):
                log.error("the audit loader did not exit on SIGTERM within %.0f s; killing it", self._stop_timeout)
                if not await _stopped(process, process.kill, self._stop_timeout):
                    log.error("the audit loader (pid %d) did not exit on SIGKILL; left behind", process.pid)
        if self._watch is not None:
            self._watch.cancel()  # done unless the loader could not be reaped
            await asyncio.gather(self._watch, return_exceptions=True)


async def _exited(process: asyncio.subprocess.Process, seconds: float) -> bool:
    """Whether ``process`` exits within ``seconds``."""
    try:
        async with asyncio.timeout(seconds):  # not wait_for: see fhir_server.waiting
            await process.wait()
    except TimeoutError:
        return False
    return True


async def _stopped(process: asyncio.subprocess.Process, send: Callable[[], None], seconds: float) -> bool:
    """Whether ``process`` exits within ``seconds`` of the signal ``send`` sends."""
    with contextlib.suppress(ProcessLookupError):  # it is gone already
        send()
    return await _exited(process, seconds)


async def serve(reader: asyncio.StreamReader, on_tenant: Callable[[str], Awaitable[None]]) -> None:
    """The loader's end: pass each notice's tenant to ``on_tenant`` until the stream ends."""
    while (message := await read_frame(reader)) is not None:
        tenant = message.get("tenant") if isinstance(message, dict) else None
        if isinstance(tenant, str):
            await on_tenant(tenant)
