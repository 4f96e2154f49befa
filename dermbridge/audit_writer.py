"""The audit writer process (``fhir_server.audit.remote``), started by the API process.

It reads the API's settings from its stdin, then AuditEvents; it stores them, chains them,
signs checkpoints and indexes them in the background, acknowledging on stdout. It ends when its
stdin closes (the API stops it, or the API is gone), after indexing everything it holds. Ctrl-C
on a terminal reaches the whole process group: it is ignored here, so that the API decides when
the writer stops.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import BinaryIO

from dermbridge.settings import Settings
from dermbridge.storage import open_engine
from fhir_server.audit.remote import read_frame, serve
from fhir_server.audit.signing import load_signer
from fhir_server.audit.trail import AuditTrail
from fhir_server.search.extract import warm_up
from fhir_server.storage.port import AuditEntry

log = logging.getLogger("dermbridge.audit_writer")


async def run() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    init = await read_frame(reader)
    if init is None:
        return
    settings = Settings.model_validate(init)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    warm_up(("AuditEvent",))  # its search parameters compiled before the first events wait on them
    engine = open_engine(settings)
    await engine.open()
    sys.setswitchinterval(settings.gil_switch_interval_ms / 1000)
    # small index transactions: an event waiting to be stored never waits long for the lock
    trail = AuditTrail(load_signer(settings.data_dir / "keys"), settings.audit_checkpoint_every, index_batch=16)
    out = _protocol_output()

    def write(data: bytes) -> None:
        out.write(data)
        out.flush()

    async def append(tenant: str, entry: AuditEntry) -> None:
        await trail.append(await engine.tenant(tenant), entry)

    try:
        await serve(reader, write, append)
    finally:
        await trail.close()  # indexes what it stored
        await engine.close()


def _protocol_output() -> BinaryIO:
    """Standard output for the acknowledgements alone: anything else printed goes to stderr."""
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return out


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(run())


if __name__ == "__main__":
    main()
