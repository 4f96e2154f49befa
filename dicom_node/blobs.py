"""The DICOM object store: one file tree per tenant, written durably (fsync) before success.

An object is first staged (written and fsynced under a temporary name in the tenant's ``.incoming``
directory), then published by an atomic rename inside the ingest transaction, before it commits; the
directory is fsynced so the rename is durable. A staged file is therefore never what a committed
instance refers to: one left in ``.incoming`` is the remains of a store that never answered Success
(a crash mid-C-STORE), and ``sweep_incoming`` removes it on start.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import tempfile
import time
from pathlib import Path

from dicom_node.iod import UID_PATTERN

log = logging.getLogger(__name__)
INCOMING = ".incoming"
# A staged file lives for one store at most (bounded by the DIMSE handler timeout): one older than
# this belongs to no running store, whichever node (on a shared blob mount) staged it.
STALE_AFTER_S = 15 * 60
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:64] or "host"
_OWNER = re.compile(r"^(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.")


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, tenant: str, study: str, series: str, instance: str) -> Path:
        for uid in (study, series, instance):
            if not UID_PATTERN.match(uid):  # UIDs become path names: never let one climb out
                raise ValueError(f"not a UID: {uid!r}")
        return self.root / tenant / study / series / f"{instance}.dcm"

    def remove_study(self, tenant: str, study: str) -> int:
        """Delete a study's objects (erasure); returns how many files went."""
        if not UID_PATTERN.match(study):
            raise ValueError(f"not a UID: {study!r}")
        directory = self.root / tenant / study
        files = sorted(directory.rglob("*")) if directory.exists() else []
        removed = 0
        for path in reversed(files):  # files before their directories
            if path.is_dir():
                path.rmdir()
            else:
                path.unlink()
                removed += 1
        if directory.exists():
            directory.rmdir()
            _fsync_directory(directory.parent)
        return removed

    def stage(self, tenant: str, data: bytes) -> Path:
        """Write ``data`` durably under a temporary name in the tenant's tree."""
        incoming = self.root / tenant / INCOMING
        incoming.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=incoming, prefix=f"{_HOST}.{os.getpid()}.")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise
        return Path(name)

    def publish(self, staged: Path, target: Path) -> None:
        """Move a staged object to its place, durably."""
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, target)
        _fsync_directory(target.parent)

    def discard(self, staged: Path) -> None:
        staged.unlink(missing_ok=True)

    def sweep_incoming(self) -> int:
        """Remove staged files no running store owns: those staged on this host by a process that is
        gone, and any older than ``STALE_AFTER_S``. Returns how many went."""
        removed = 0
        for staged in sorted(self.root.glob(f"*/{INCOMING}/*")):
            if staged.is_file() and _orphaned(staged):
                staged.unlink(missing_ok=True)
                removed += 1
        if removed:
            log.warning("removed %d staged DICOM objects left by interrupted stores", removed)
        return removed


def _orphaned(staged: Path) -> bool:
    owner = _OWNER.match(staged.name)
    if owner is not None and owner["host"] == _HOST and not _process_alive(int(owner["pid"])):
        return True
    try:
        return time.time() - staged.stat().st_mtime > STALE_AFTER_S
    except FileNotFoundError:  # its store published or discarded it meanwhile
        return False


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
