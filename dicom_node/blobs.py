"""The DICOM object store (DESIGN "Storage"): where the (sealed) bytes of each instance live, apart from its
index. ``BlobStore`` is what the node asks of one; two implement it, chosen by the ``blobs`` setting:
``FileBlobStore`` (one file tree per tenant, the default; a shared mount when several nodes serve) and
``dicom_node.blobs_postgres.PostgresBlobStore`` (chunk rows in the tenant's PostgreSQL schema).

Every store keeps the same promise: an object is first *staged* (written durably under a name no record
uses), then *published* under its instance's key inside the ingest transaction, before the index commits;
so an acknowledged store's object is durable, and a staged object left behind is the remains of a store
that never answered Success (a crash mid-C-STORE), which ``sweep_incoming`` removes. The bytes are sealed
(``dicom_node.instance_files``) before they reach any store: encryption and erasure by key deletion do not
depend on where they are kept.

``FileBlobStore``: a staged file is written and fsynced under a temporary name in the tenant's
``.incoming`` directory, published by an atomic rename, the directory fsynced so the rename is durable.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from dicom_node.iod import UID_PATTERN

log = logging.getLogger(__name__)
INCOMING = ".incoming"
# A staged object lives for one store at most (bounded by the DIMSE handler timeout): one older than
# this belongs to no running store, whichever node (on a shared blob mount or database) staged it.
STALE_AFTER_S = 15 * 60
HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:64] or "host"
_OWNER = re.compile(r"^(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.")


@dataclass(frozen=True, slots=True)
class BlobKey:
    """Where an instance's object is: the tenant and the instance's three UIDs (checked: they become names)."""

    tenant: str
    study: str
    series: str
    instance: str

    def __post_init__(self) -> None:
        for uid in (self.study, self.series, self.instance):
            if not UID_PATTERN.match(uid):  # UIDs become path names: never let one climb out
                raise ValueError(f"not a UID: {uid!r}")


class BlobStore(Protocol):
    """What the node asks of an object store; ``Staged`` is the store's own handle of a staged object."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def stage(self, tenant: str, data: bytes) -> object:
        """Write ``data`` durably under a name no record uses; the handle to publish or discard."""
        ...

    async def publish(self, staged: object, key: BlobKey) -> None:
        """The staged object becomes ``key``'s (replacing one there), durably."""
        ...

    async def discard(self, staged: object) -> None: ...

    async def read(self, key: BlobKey) -> bytes:
        """The object's bytes; ``FileNotFoundError`` when there is none."""
        ...

    async def exists(self, key: BlobKey) -> bool: ...

    async def delete(self, key: BlobKey) -> None:
        """Remove ``key``'s object (none there: nothing happens)."""
        ...

    async def remove_study(self, tenant: str, study: str) -> int:
        """Delete a study's objects (erasure); returns how many went."""
        ...

    def keys(self, tenant: str) -> AsyncIterator[BlobKey]:
        """Every published object of the tenant (``dermbridge storage copy``)."""
        ...

    async def sweep_incoming(self) -> int:
        """Remove staged objects no running store owns; returns how many went."""
        ...

    async def probe(self) -> None:
        """Raise when the store cannot be written (``/readyz``)."""
        ...


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileBlobStore:
    """One file tree per tenant under ``root``: ``tenant/study/series/instance.dcm``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def path(self, key: BlobKey) -> Path:
        return self.root / key.tenant / key.study / key.series / f"{key.instance}.dcm"

    async def stage(self, tenant: str, data: bytes) -> Path:
        return await asyncio.to_thread(self.stage_file, tenant, data)

    def stage_file(self, tenant: str, data: bytes) -> Path:
        """Write ``data`` durably under a temporary name in the tenant's tree."""
        incoming = self.root / tenant / INCOMING
        incoming.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=incoming, prefix=f"{HOST}.{os.getpid()}.")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise
        return Path(name)

    async def publish(self, staged: object, key: BlobKey) -> None:
        assert isinstance(staged, Path)
        await asyncio.to_thread(self._publish, staged, self.path(key))

    @staticmethod
    def _publish(staged: Path, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, target)
        _fsync_directory(target.parent)

    async def discard(self, staged: object) -> None:
        assert isinstance(staged, Path)
        await asyncio.to_thread(staged.unlink, True)

    async def read(self, key: BlobKey) -> bytes:
        return await asyncio.to_thread(self.path(key).read_bytes)

    async def exists(self, key: BlobKey) -> bool:
        return await asyncio.to_thread(self.path(key).is_file)

    async def delete(self, key: BlobKey) -> None:
        await asyncio.to_thread(self.path(key).unlink, True)

    async def remove_study(self, tenant: str, study: str) -> int:
        if not UID_PATTERN.match(study):
            raise ValueError(f"not a UID: {study!r}")
        return await asyncio.to_thread(self._remove_tree, self.root / tenant / study)

    @staticmethod
    def _remove_tree(directory: Path) -> int:
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

    async def keys(self, tenant: str) -> AsyncIterator[BlobKey]:
        found = await asyncio.to_thread(lambda: sorted((self.root / tenant).glob("*/*/*.dcm")))
        for path in found:
            if path.parent.parent.name != INCOMING:
                yield BlobKey(tenant, path.parent.parent.name, path.parent.name, path.stem)

    async def sweep_incoming(self) -> int:
        return await asyncio.to_thread(self.sweep_files)

    def sweep_files(self) -> int:
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

    async def probe(self) -> None:
        """The root exists (or can be made) and is writable."""
        await asyncio.to_thread(self._probe)

    def _probe(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not os.access(self.root, os.W_OK):
            raise PermissionError(f"{self.root} is not writable")


def _orphaned(staged: Path) -> bool:
    owner = _OWNER.match(staged.name)
    if owner is not None and owner["host"] == HOST and not process_alive(int(owner["pid"])):
        return True
    try:
        return time.time() - staged.stat().st_mtime > STALE_AFTER_S
    except FileNotFoundError:  # its store published or discarded it meanwhile
        return False


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
