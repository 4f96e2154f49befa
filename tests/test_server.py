"""tests/server.py: a server that logs a lot never blocks on its own output (pentest 2, finding 4).

``running_server`` used to give the process a stdout pipe that nobody read: once the pipe was full
(64 KiB on Linux), the next log line blocked the server for good and the test stalled. Its output
now goes to a log file; here a real server is made to log well past a pipe's capacity (each refused
token request logs a line) and must keep answering, each request bounded in time.
"""

from __future__ import annotations

from pathlib import Path

import httpx2

from tests.server import running_server

PIPE_CAPACITY = 65536
BOUND_SECONDS = 60.0  # per request: a blocked server fails the test instead of stalling it


def test_a_server_that_logs_a_lot_keeps_answering(tmp_path: Path) -> None:
    env = {"DERMBRIDGE_DICOM_ENABLED": "false"}
    with running_server(tmp_path / "var", env=env, admin=False) as server:
        assert server.log is not None and server.process.stdout is None
        refused = {"grant_type": "client_credentials", "client_id": "default.nobody", "client_secret": "wrong"}
        with httpx2.Client(timeout=BOUND_SECONDS) as http:
            for _ in range(5000):  # a bound: about 1,000 refusals fill a pipe's 64 KiB
                assert http.post(f"{server.root}/auth/token", data=refused).status_code in (401, 429)
                if server.log.stat().st_size > 2 * PIPE_CAPACITY:
                    break
            assert server.log.stat().st_size > 2 * PIPE_CAPACITY
            assert http.get(f"{server.base}/metadata").status_code == 200
    assert "token refused" in server.output
