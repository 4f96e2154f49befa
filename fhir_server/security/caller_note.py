"""Who a request turned out to be from, for its access-log line (``dermbridge.access_log``).

The HTTP edge opens a note per request (``noting``); the authentication layer writes the authenticated
client's id into it (``note_client``). Only the client id: never a token, a secret or a user's name.
A note object (not the context variable itself) is written, so a value noted in a task the request
spawned still reaches the edge.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from fhir_server.security.scopes import Access

MAX_CLIENT_ID = 128


@dataclass(slots=True)
class CallerNote:
    client_id: str | None = None


_NOTE: ContextVar[CallerNote | None] = ContextVar("dermbridge_caller_note", default=None)


@contextmanager
def noting() -> Iterator[CallerNote]:
    """A fresh note for the request being handled in this context."""
    note = CallerNote()
    token = _NOTE.set(note)
    try:
        yield note
    finally:
        _NOTE.reset(token)


def note_client(client_id: str) -> None:
    note = _NOTE.get()
    if note is not None:
        note.client_id = client_id[:MAX_CLIENT_ID]


def note_access(access: Access | None) -> Access | None:
    """Notes the client of a verified Access (registered clients only: an external provider's subject
    may name a person) and returns it."""
    if access is not None:
        note_client(access.subject if access.issuer is None else "(external provider)")
    return access
