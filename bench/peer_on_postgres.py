"""A C-STORE peer of ``vendor/peerbench/peers.py`` on a fresh database of a PostgreSQL server (issue 16,
"Figures": C-STORE ingest with the PostgreSQL engine vs SQLite vs Orthanc).

    python bench/peer_on_postgres.py --server postgresql://postgres@127.0.0.1:PORT/postgres dermbridge -- COMMAND...
    python bench/peer_on_postgres.py --server DSN orthanc --port PORT --store DIR

Each run creates an empty database (peers.py starts every peer on an empty store), then replaces itself
(``exec``, so the peer keeps this PID and peers.py's SIGTERM reaches it) with: ``dermbridge``: COMMAND with
``DERMBRIDGE_STORAGE`` naming that database; ``orthanc``: Debian's Orthanc with its PostgreSQL index plugin
(``orthanc-postgresql``; files still in DIR, as DermBridge keeps its blobs on disk) and ``TCP_NODELAY=1``, so
it compares with peers.py's ``orthanc-nodelay``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

ORTHANC = "/usr/sbin/Orthanc"
INDEX_PLUGIN = "/usr/share/orthanc/plugins/libOrthancPostgreSQLIndex.so"


async def fresh_database(server: str) -> str:
    """A new, empty database on ``server`` (a DSN); its own DSN."""
    name = f"peer_{uuid.uuid4().hex[:12]}"
    connection = await asyncpg.connect(server, timeout=30)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return urlunsplit(urlsplit(server)._replace(path=f"/{name}"))


def orthanc_config(dsn: str, port: int, store: Path) -> dict[str, object]:
    """peers.py's Orthanc settings, with the index in PostgreSQL (the plugin's README.Debian settings)."""
    url = urlsplit(dsn)
    return {"Name": "peerbench", "DicomAet": "ORTHANC", "DicomPort": port, "HttpPort": port + 1,
            "RemoteAccessAllowed": False, "StorageDirectory": str(store), "IndexDirectory": str(store.parent / "index"),
            "DicomAlwaysAllowStore": True, "DicomCheckCalledAet": False, "Plugins": [INDEX_PLUGIN],
            "DicomModalities": {},
            "PostgreSQL": {"EnableIndex": True, "EnableStorage": False, "Host": url.hostname, "Port": url.port,
                           "Database": url.path.lstrip("/"), "Username": url.username, "Password": url.password or "",
                           "Lock": False, "EnableSsl": False}}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", required=True, help="DSN of a database to run CREATE DATABASE in")
    peers = parser.add_subparsers(dest="peer", required=True)
    dermbridge = peers.add_parser("dermbridge")
    dermbridge.add_argument("command", nargs=argparse.REMAINDER)
    orthanc = peers.add_parser("orthanc")
    orthanc.add_argument("--port", type=int, required=True)
    orthanc.add_argument("--store", type=Path, required=True)
    args = parser.parse_args()
    dsn = asyncio.run(fresh_database(args.server))
    if args.peer == "dermbridge":
        command = [a for a in args.command if a != "--"]
        os.execvpe(command[0], command, {**os.environ, "DERMBRIDGE_STORAGE": dsn})
    config = args.store.parent / "orthanc.json"
    config.write_text(json.dumps(orthanc_config(dsn, args.port, args.store)))
    os.execve(ORTHANC, [ORTHANC, str(config)], {**os.environ, "TCP_NODELAY": "1"})


if __name__ == "__main__":
    main()
