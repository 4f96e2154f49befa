"""Two API processes on one PostgreSQL count the same failed attempts (RFC 6749 §10.10): a guesser gets no
more tries behind a load balancer than against one process (fhir_server/security/lockout.py)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import make_client
from tests.postgres import ThrowawayPostgres


def test_failures_at_either_api_process_lock_the_pair_at_both(
    tmp_path: Path, postgres_server: ThrowawayPostgres
) -> None:
    dsn = postgres_server.create_database()
    # two processes share the database and the key directory (README "Running several processes")
    with make_client(tmp_path / "var", storage=dsn) as first, make_client(tmp_path / "var", storage=dsn) as second:
        client, _ = first.portal.call(first.app.state.clients.create, "default", "guessed", ("admin",))  # type: ignore[attr-defined]
        form = {"grant_type": "client_credentials", "client_id": client.client_id, "client_secret": "wrong"}
        for attempt in range(10):  # the pair's limit, split between the two processes
            process = first if attempt % 2 else second
            response = process.post("/auth/token", data=form, headers={"Authorization": ""})
            assert response.status_code == 401, response.text
        for process in (first, second):
            locked = process.post("/auth/token", data=form, headers={"Authorization": ""})
            assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 0, locked.text
