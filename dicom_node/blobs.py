"""The DICOM object store: one file tree per tenant, written durably (fsync) before success.

An object is first staged (written and fsynced under a temporary name), then published by an
atomic rename inside the ingest transaction; the directory is fsynced so the rename is durable.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from dicom_node.iod import UID_PATTERN


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
        incoming = self.root / tenant / ".incoming"
        incoming.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=incoming)
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
