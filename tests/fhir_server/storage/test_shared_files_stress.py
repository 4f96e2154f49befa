"""No crash on the paths that share a tenant's SQLite files between processes, with both cores busy.

A regression test for the SIGBUS the suite died of: a scan of the live files in the server's own
process dropped its POSIX locks, and the next process to open the files truncated the ``-shm``
under the server's readers (``tests.raw_files``)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROUNDS = 12
BOUND_S = 600  # the whole run; it takes well under a minute on an idle machine


@contextmanager
def busy_cores() -> Iterator[None]:
    """A CPU-burning process per core, stopped on leaving (each also stops itself after BOUND_S)."""
    burn = f"import time\nend = time.monotonic() + {BOUND_S}\nwhile time.monotonic() < end: pass"
    burners = [subprocess.Popen([sys.executable, "-c", burn]) for _ in range(os.cpu_count() or 2)]
    try:
        yield
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()


def test_scans_erasures_and_other_processes_opening_the_files_never_crash_the_server(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "tests.fhir_server.storage.shared_files_stress", str(tmp_path / "var"),
               str(ROUNDS)]  # fmt: skip
    with busy_cores():
        run = subprocess.run(command, capture_output=True, text=True, timeout=BOUND_S)
    assert "Fatal Python error" not in run.stderr, run.stderr[-4000:]
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    assert "intact" in run.stdout
