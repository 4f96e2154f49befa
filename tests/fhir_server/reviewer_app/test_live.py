"""The worklist's server-sent events (``/app/events``) against a real ``dermbridge serve`` with httpx over a
socket: a session is needed, a Task change is announced, the streams of one session are bounded (the newest
replaces the oldest), and signing out ends the stream."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, closing

import httpx
import pytest

from fhir_server.reviewer_app.live import MAX_STREAMS_PER_SESSION
from tests.server import CLI_TIMEOUT_S, Server, running_server

PASSWORD = "correct horse battery staple"
TASK = {"resourceType": "Task", "status": "requested", "intent": "order"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("live") / "var"
    with running_server(data) as running:
        made = running.http.post(f"{running.base}/Practitioner", json={"resourceType": "Practitioner"})
        assert made.status_code == 201, made.text
        command = [sys.executable, "-m", "dermbridge", "user", "create", "--tenant", "default", "--username",
                   "alice", "--practitioner", made.json()["id"], "--role", "clinician-reviewer", "--password-stdin",
                   "--data-dir", str(data)]  # fmt: skip
        created = subprocess.run(command, input=PASSWORD, capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
        assert created.returncode == 0, created.stderr
        yield running


def _browser(server: Server) -> httpx.Client:
    """A client with alice's session cookie, as a browser has after signing in."""
    browser = httpx.Client(base_url=server.root, timeout=httpx.Timeout(60.0))
    page = browser.get("/auth/login")
    form = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page.text))
    signed = browser.post("/auth/login", data={**form, "username": "alice", "password": PASSWORD})
    assert signed.status_code in (200, 303) and browser.cookies, signed.text
    return browser


def _events(lines: Iterator[str]) -> Iterator[str]:
    """The names of the events of a text/event-stream (comments and retry lines skipped)."""
    for line in lines:
        if line.startswith("event: "):
            yield line.removeprefix("event: ")


def test_a_stream_needs_a_session(server: Server) -> None:
    anonymous = httpx.get(f"{server.root}/app/events", follow_redirects=False)
    assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/auth/login")


def test_a_task_change_is_announced_and_sign_out_ends_the_stream(server: Server) -> None:
    with closing(_browser(server)) as browser, browser.stream("GET", "/app/events") as stream:
        assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        assert next(lines).startswith("retry: ")
        assert server.http.post(f"{server.base}/Task", json=TASK).status_code == 201
        names = _events(lines)
        assert next(names) == "worklist"
        csrf = browser.get("/auth/session").json()["csrf"]
        assert browser.post("/auth/logout", data={"csrf": csrf}).status_code in (200, 303)
        assert next(names) == "ended"
        assert list(lines) == ["data: signed out", ""]  # and the server closed the stream


def test_a_sessions_newest_stream_replaces_its_oldest_beyond_the_limit(server: Server) -> None:
    """A reviewer who leaves the worklist and comes back quickly keeps live updates: the session's streams stay
    bounded because the newest one ends the oldest (whose page has usually gone already)."""
    with closing(_browser(server)) as browser, ExitStack() as open_streams:
        streams = []
        for _ in range(MAX_STREAMS_PER_SESSION):
            stream = open_streams.enter_context(browser.stream("GET", "/app/events"))
            lines = stream.iter_lines()
            assert stream.status_code == 200 and next(lines).startswith("retry: ")  # counted once it started
            streams.append(lines)
        newest = open_streams.enter_context(browser.stream("GET", "/app/events"))
        assert newest.status_code == 200
        oldest = streams[0]
        assert next(_events(oldest)) == "replaced"
        assert list(oldest) == ["data: a newer page of this session follows the worklist", ""]  # and closed
        assert next(newest.iter_lines()).startswith("retry: ")
