"""Every byte a data directory keeps on disk, read by another process.

Never read a live SQLite database, ``-wal`` or ``-shm`` file with ``open()`` in the server's own
process: closing that descriptor drops every POSIX lock the process holds on the file (SQLite,
"How To Corrupt An SQLite Database File", section 2.2). Another process's next connection (the
audit loader, a CLI) then takes itself for the only one and truncates the ``-shm`` under the
server's memory map: its readers die of SIGBUS. Locks belong to a process, so a scan in a
process of its own leaves the server's untouched.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

_SCAN = """
import sys
from pathlib import Path
out = sys.stdout.buffer
for path in sorted(Path(sys.argv[1]).rglob("*")):
    if path.is_file() and "keys" not in path.parts:
        out.write(path.read_bytes() + b"\\n")
"""


def raw_bytes(data_dir: Path) -> bytes:
    """Every byte the server keeps on disk (databases, WAL files, blobs; not the keys)."""
    scan = subprocess.run([sys.executable, "-c", _SCAN, str(data_dir)], capture_output=True, timeout=120, check=True)
    return scan.stdout
