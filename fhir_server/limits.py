"""The bounds on what one request may ask of the server (security.html#input-validation).

Each bound is named here once; the README's "Limits" table lists them. A request beyond a
shape bound (nesting, repetitions, a number's digits) answers 400, beyond a size bound
(arrays, values, bytes) 413; either way an OperationOutcome whose diagnostics name the bound.
"""

from __future__ import annotations

from fhir_server.errors import OperationOutcomeError, bad_request

# JSON bodies (fhir_server/api/json_body.py) and resources (fhir_server/validation.py)
MAX_JSON_DEPTH = 100  # nested objects and arrays; the model validator recurses per level
MAX_ARRAY_ITEMS = 10_000  # items of any one JSON array
MAX_BODY_VALUES = 1_000_000  # JSON values (objects, arrays, scalars) in one body
MAX_RESOURCE_VALUES = 20_000  # JSON values in one resource: bounds its validation and index extraction
MAX_INDEXED_STRING = 1024  # characters of a string the search index keeps (string search, token text)
MAX_INDEXED_BYTES = 1024  # UTF-8 bytes of one indexed value (PostgreSQL btree rows stop near 2,700 bytes)

# search (fhir_server/search/request.py)
MAX_SEARCH_PARAMETERS = 100  # parameters of one search, result parameters included
MAX_PARAMETER_REPEATS = 20  # the same parameter name ANDed
MAX_OR_VALUES = 100  # comma-separated alternatives of one parameter
MAX_MODIFIER_CODES = 1_000  # codes one :in, :not-in, :above or :below value may stand for
MAX_SEARCH_CODES = 5_000  # codes all the terminology modifiers of one search stand for together
MAX_CHAIN_DEPTH = 3  # chained hops and _has levels, nested in one another
MAX_SORT_KEYS = 5  # keys of _sort

# numbers and headers
MAX_VERSION_DIGITS = 18  # a version id (vread, ETag, If-Match) below 10**18
MAX_NUMBER_DIGITS = 18  # _count, _offset, _snapshot
MAX_HEADER_BYTES = 8192  # one FHIR header's value (If-Match, If-None-Exist, Prefer...)


def whole_number(text: str, name: str, max_digits: int = MAX_NUMBER_DIGITS) -> int | None:
    """``text`` as a non-negative int, or None when it is not ASCII digits (``"²".isdigit()`` is True).

    More than ``max_digits`` digits is a 400 naming the bound: Python refuses to convert 4,300+
    digits and SQLite integers stop at 2**63-1, so such a number can only come from a hostile client.
    """
    if not (text.isascii() and text.isdigit()):
        return None
    if len(text) > max_digits:
        raise bad_request(f"{name} has {len(text)} digits: at most {max_digits} are accepted", [name])
    return int(text)


def too_large(diagnostics: str, expression: list[str] | None = None) -> OperationOutcomeError:
    """413 with ``too-costly``: the request is larger than a size bound."""
    return OperationOutcomeError.of(413, "too-costly", diagnostics, expression)
