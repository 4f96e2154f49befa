"""The audit writer process: server-built AuditEvents stored, chained and indexed off the API's GIL.

An audited read costs the API about as much CPU for its AuditEvent (the durable append, the
index rows) as for the read itself, and all of it ran under the API process's GIL while the
machine's other core sat partly idle. So the API process builds each event (id, timestamp,
JSON, hash: ``AuditTrail.entry``) and hands it to a writer process over a pipe; the writer
appends the events it has received to their tenants' chains in group commits, indexes them in
the background, and acknowledges each batch once it is durable. The request waits for that
acknowledgement: nothing is answered before its AuditEvent is on disk, as before.

Frames in both directions: 4 bytes of big-endian length, then JSON.
- API -> writer: first the settings the writer opens the engine with (its own business), then
  one frame per event: ``{"tenant", "id", "lastUpdated", "content", "hash"}``.
- writer -> API: ``{"done": n}`` or ``{"failed": n, "error": "..."}``, for the next ``n``
  events in the order they were sent.

If the writer process is gone, events are written in the API process again (``AuditTrail``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson

from fhir_server.storage.port import AuditEntry

log = logging.getLogger(__name__)
HEADER = struct.Struct(">I")
MAX_FRAME = 64 * 1024 * 1024
CLOSE_TIMEOUT_S = 60.0
BACKLOG_BYTES = 4 * 1024 * 1024  # unsent frames beyond this: a request waits for the pipe to drain


class WriterGone(RuntimeError):
    """The audit writer process ended before acknowledging an event."""


class AuditWriteFailed(RuntimeError):
    """The audit writer could not store an event (its error is the message)."""


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
        raise ValueError(f"an audit writer frame of {size} bytes")
    return orjson.loads(await reader.readexactly(size))


def _entry_message(tenant: str, entry: AuditEntry) -> dict[str, str]:
    return {"tenant": tenant, "id": entry.resource_id, "lastUpdated": entry.last_updated,
            "content": (entry.content or b"").decode(), "hash": entry.content_hash}  # fmt: skip


def entry_of(message: dict[str, str]) -> tuple[str, AuditEntry]:
    content = message["content"].encode()
    return message["tenant"], AuditEntry(0, message["id"], message["lastUpdated"], content, message["hash"])


class RemoteWriter:
    """The API's end: starts the writer process, sends it events, resolves each event's future
    when the writer acknowledges it."""

    def __init__(self, command: Sequence[str], init: Any) -> None:
        self._command = list(command)
        self._init = init
        self._process: asyncio.subprocess.Process | None = None
        self._acks: asyncio.Task[None] | None = None
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._unsent: list[bytes] = []
        self._flush_scheduled = False
        self.alive = False

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def start(self) -> None:
        self._process = await asyncio.create_subprocess_exec(
            *self._command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write(frame(self._init))
        self.alive = True
        self._acks = asyncio.create_task(self._read_acks(self._process.stdout), name="audit-writer-acks")

    async def append(self, tenant: str, entry: AuditEntry) -> None:
        """Returns once the writer has made the event durable; raises WriterGone or AuditWriteFailed."""
        if not self.alive or self._process is None or self._process.stdin is None:
            raise WriterGone("the audit writer process is not running")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        self._unsent.append(frame(_entry_message(tenant, entry)))
        if not self._flush_scheduled:  # every event of this loop pass goes in one write
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        stdin = self._process.stdin
        if stdin.transport.get_write_buffer_size() > BACKLOG_BYTES:
            with contextlib.suppress(ConnectionError):
                await stdin.drain()
        await future

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._unsent or self._process is None or self._process.stdin is None:
            return
        data, self._unsent = b"".join(self._unsent), []
        try:
            self._process.stdin.write(data)
        except (ConnectionError, RuntimeError) as exc:  # the pipe is closed: the writer is gone
            self._gone(f"writing to it failed: {exc}")

    async def _read_acks(self, stdout: asyncio.StreamReader) -> None:
        try:
            while (message := await read_frame(stdout)) is not None:
                count = int(message.get("done", 0) or message.get("failed", 0))
                for _ in range(min(count, len(self._waiting))):
                    future = self._waiting.popleft()
                    if future.done():
                        continue
                    if "done" in message:
                        future.set_result(None)
                    else:
                        future.set_exception(AuditWriteFailed(str(message.get("error", "unknown error"))))
        except Exception as exc:
            log.exception("the audit writer's acknowledgements are unreadable")
            self._gone(str(exc))
        else:
            self._gone("it ended")

    def _gone(self, why: str) -> None:
        if self.alive:
            log.error("the audit writer process is gone (%s); AuditEvents are written in process", why)
        self.alive = False
        if self._waiting:
            log.error("%d AuditEvents were not acknowledged by the audit writer (%s)", len(self._waiting), why)
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(WriterGone(f"the audit writer process is gone ({why})"))

    async def close(self) -> None:
        """Ask the writer to finish (it indexes what it holds) and wait for it to exit."""
        process = self._process
        if process is None:
            return
        self.alive = False  # events from now on are written in this process; those sent are acknowledged below
        self._flush()
        self._process = None
        if process.stdin is not None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), CLOSE_TIMEOUT_S)
        except TimeoutError:
            log.error("the audit writer did not finish within %.0f s; stopping it", CLOSE_TIMEOUT_S)
            process.kill()
            await process.wait()
        if self._acks is not None:
            await asyncio.gather(self._acks, return_exceptions=True)
        self._gone("it was stopped before acknowledging")


Append = Callable[[str, AuditEntry], Awaitable[None]]


async def serve(reader: asyncio.StreamReader, write: Callable[[bytes], None], append: Append) -> None:
    """The writer's end: read events until the stream ends. What arrived together is one batch,
    stored with ``append`` concurrently (each tenant's events share group commits) and
    acknowledged after the batches before it."""
    buffer = bytearray()
    previous: asyncio.Future[None] | None = None
    while chunk := await reader.read(1 << 20):
        buffer += chunk
        messages, consumed = _complete_frames(buffer)
        del buffer[:consumed]
        if messages:  # stored while the next batch is read: batches overlap, acknowledgements keep their order
            batch = [entry_of(message) for message in messages]
            previous = asyncio.ensure_future(_store_batch(batch, previous, write, append))
    if previous is not None:
        await previous


async def _store_batch(batch: list[tuple[str, AuditEntry]], previous: asyncio.Future[None] | None,
                       write: Callable[[bytes], None], append: Append) -> None:  # fmt: skip
    outcomes = await asyncio.gather(*(append(tenant, entry) for tenant, entry in batch), return_exceptions=True)
    if previous is not None:
        await previous
    write(b"".join(_acks(outcomes)))


def _complete_frames(buffer: bytearray) -> tuple[list[Any], int]:
    messages, offset = [], 0
    while len(buffer) - offset >= HEADER.size:
        (size,) = HEADER.unpack_from(buffer, offset)
        if size > MAX_FRAME:
            raise ValueError(f"an audit writer frame of {size} bytes")
        if len(buffer) - offset - HEADER.size < size:
            break
        start = offset + HEADER.size
        messages.append(orjson.loads(bytes(buffer[start : start + size])))
        offset = start + size
    return messages, offset


def _acks(outcomes: Sequence[BaseException | None]) -> list[bytes]:
    """Acknowledgements in order, runs of successes and failures each in one frame."""
    acks: list[bytes] = []
    run_ok, run = True, 0
    error = ""
    for outcome in outcomes:
        ok = not isinstance(outcome, BaseException)
        if run and ok != run_ok:
            acks.append(frame({"done": run} if run_ok else {"failed": run, "error": error}))
            run = 0
        run_ok, run = ok, run + 1
        if not ok:
            error = f"{type(outcome).__name__}: {outcome}"
    if run:
        acks.append(frame({"done": run} if run_ok else {"failed": run, "error": error}))
    return acks
