"""The audit loader process (``fhir_server.audit.remote``), started by the API process.

It reads the API's settings from its stdin, then notices of tenants with staged AuditEvents; it
loads each such tenant's staged events into its store (stored, chained, indexed) a moment later
and signs checkpoints. It ends when its stdin closes (the API stops it, or the API is gone),
after loading everything staged in the tenants it was told of. Ctrl-C on a terminal reaches the
whole process group: it is ignored here, so that the API decides when the loader stops.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from dermbridge.logs import configure
from dermbridge.settings import Settings
from dermbridge.storage import open_audit_trail, open_engine
from fhir_server.audit.remote import read_frame, serve
from fhir_server.search.extract import warm_up

LOAD_BATCH = 256  # events per load transaction: the API's own writes wait at most this long for the lock


async def run() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    init = await read_frame(reader)
    if init is None:
        return
    settings = Settings.model_validate(init)
    configure(settings.log_level, settings.log_format)
    warm_up(("AuditEvent",))  # its search parameters compiled before the first events wait on them
    engine = open_engine(settings)
    await engine.open()
    trail = open_audit_trail(settings, load_batch=LOAD_BATCH)

    async def staged_in(tenant: str) -> None:
        trail.load_soon(await engine.tenant(tenant))

    try:
        await serve(reader, staged_in)
    finally:
        await trail.close()  # loads what is staged
        await engine.close()


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(run())


if __name__ == "__main__":
    main()
