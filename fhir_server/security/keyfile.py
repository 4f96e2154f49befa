"""Secret key material on disk: created once with mode 0600, fsynced, then only read.

Several processes may start at once on one key directory (``dermbridge serve --role ...``): the key is
written whole to a temporary file and then linked to its name, which fails if another process got there
first (then its key is read). So the name never shows a half-written key, and every process uses the same.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def read_or_create_secret(path: Path, size: int) -> bytes:
    """The ``size`` random bytes kept in ``path``, created (owner-only) on first use."""
    return read_or_create(path, lambda: os.urandom(size))


def read_or_create(path: Path, make: Callable[[], bytes]) -> bytes:
    """The key material kept in ``path``, made by ``make`` (owner-only) on first use."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.exists():
        return path.read_bytes()
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(make())
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):  # another process's key is in place: that one holds
            os.link(temporary, path)
    finally:
        os.unlink(temporary)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return path.read_bytes()
