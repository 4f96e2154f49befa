"""Key files shared by several processes starting at once (``fhir_server.security.keyfile``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from fhir_server.security import keyfile
from fhir_server.security.keyfile import read_or_create_secret


def test_a_process_starting_while_another_creates_the_key_reads_the_whole_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second process runs at the worst moment: the first has opened its file and written nothing."""
    path, seen, calls = tmp_path / "keys" / "token.key", [], []
    real_fdopen = os.fdopen

    def fdopen_then_another_process(fd: int, *args: Any, **kwargs: Any) -> Any:
        calls.append(fd)
        if len(calls) == 1:
            seen.append(read_or_create_secret(path, 32))  # the other process, inside the first one's window
        return real_fdopen(fd, *args, **kwargs)

    monkeypatch.setattr(keyfile.os, "fdopen", fdopen_then_another_process)
    first = read_or_create_secret(path, 32)
    assert len(seen[0]) == 32 and first == seen[0]
    assert read_or_create_secret(path, 32) == first
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in path.parent.iterdir()] == ["token.key"]  # no temporary file left
