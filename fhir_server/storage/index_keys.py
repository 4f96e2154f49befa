"""The bounded form of a value in the search index, the same on every engine.

PostgreSQL refuses a btree row over about 2,700 bytes ("index row size exceeds btree maximum"), so a value is
kept by UTF-8 bytes, not characters (NFKD can turn one character into 18). Two forms:

- ``exact_key``: compared with ``=`` (token system/code, uri, reference url and id). A value over
  ``MAX_INDEXED_BYTES`` keeps its head and a SHA-256 of the whole value, so a search by the whole value still
  finds exactly the resources holding it, as HAPI FHIR hashes the whole token value next to its truncated text.
- ``prefix_key``: compared as a prefix or substring (string ``norm``, uri ``:below``): the head only; two
  values sharing their first ``MAX_INDEXED_BYTES`` bytes are the same to such a search.
"""

from __future__ import annotations

import hashlib

from fhir_server.limits import MAX_INDEXED_BYTES

_DIGEST_MARK = "#sha256:"
_HEAD_BYTES = MAX_INDEXED_BYTES - len(_DIGEST_MARK) - 64


def _head(text: str, limit: int) -> str:
    """The longest start of ``text`` of at most ``limit`` UTF-8 bytes (never half a character)."""
    return text.encode("utf-8")[:limit].decode("utf-8", "ignore")


def prefix_key(text: str) -> str:
    if len(text) * 4 <= MAX_INDEXED_BYTES:  # no UTF-8 character is longer than 4 bytes
        return text
    return _head(text, MAX_INDEXED_BYTES)


def exact_key(text: str) -> str:
    if len(text) * 4 <= MAX_INDEXED_BYTES or len(text.encode("utf-8")) <= MAX_INDEXED_BYTES:
        return text
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return f"{_head(text, _HEAD_BYTES)}{_DIGEST_MARK}{digest}"


def below_key(text: str) -> str:
    """A uri ``:below`` value: compared with the head an over-long indexed uri keeps."""
    if len(text) * 4 <= MAX_INDEXED_BYTES or len(text.encode("utf-8")) <= MAX_INDEXED_BYTES:
        return text
    return _head(text, _HEAD_BYTES)
