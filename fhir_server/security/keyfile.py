"""Secret key material on disk: created once with mode 0600, fsynced, then only read."""

from __future__ import annotations

import os
from pathlib import Path


def read_or_create_secret(path: Path, size: int) -> bytes:
    """The ``size`` random bytes kept in ``path``, created (owner-only) on first use."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()
    with os.fdopen(fd, "wb") as handle:
        handle.write(os.urandom(size))
        handle.flush()
        os.fsync(handle.fileno())
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return path.read_bytes()
