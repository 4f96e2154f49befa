"""fhir_server/api/json_body.py: JSON bodies within bounds, duplicate keys refused (json.html)."""

from __future__ import annotations

import json

import pytest

from fhir_server.api.json_body import parse_json
from fhir_server.errors import OperationOutcomeError
from fhir_server.limits import MAX_ARRAY_ITEMS, MAX_BODY_VALUES, MAX_JSON_DEPTH


def status_of(raw: bytes) -> int:
    with pytest.raises(OperationOutcomeError) as caught:
        parse_json(raw)
    return caught.value.status


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": 1, "a": 2}',
        b'{"a": {"b": 1, "c": {"x": "\\"d\\":", "x": 2}}}',
        b'[{"k": "v"}, {"k": "v", "k": "w"}]',
        b'{"a": "\\u003a", "a": "x"}',  # an escaped ':' makes up for the dropped key's
        b'{"a": "\\u003A\\u003a", "b": 1, "b": 2, "c": 3, "c": 4}',
        b'{"a" : 1 , "a"\n:\t2}',
    ],
)
def test_duplicate_keys_are_refused(raw: bytes) -> None:
    assert status_of(raw) == 400


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": "x:y", "b": ["::", {"c": ":"}], "d": "\\\\", "e": "\\"f\\": 1"}',
        b'{"a": "\\u003a", "b": "\\\\u003a"}',
        b'{"url": "http://example.org:8080/a"}',
        b"[]",
        b'"text:"',
        b"42",
    ],
)
def test_unique_keys_and_colons_in_strings_are_accepted(raw: bytes) -> None:
    assert parse_json(raw) == json.loads(raw)


def test_depth_arrays_and_values_are_bounded() -> None:
    assert status_of(b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1)) == 400
    assert status_of(b"[" * 5000 + b"]" * 5000) == 400  # beyond orjson's own recursion limit
    assert parse_json(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH) is not None
    assert status_of(json.dumps({"a": [0] * (MAX_ARRAY_ITEMS + 1)}).encode()) == 413
    rows = [[0] * 9_000 for _ in range(MAX_BODY_VALUES // 9_000 + 1)]
    assert status_of(json.dumps(rows).encode()) == 413


def test_the_refusal_names_where() -> None:
    with pytest.raises(OperationOutcomeError) as caught:
        parse_json(json.dumps({"resourceType": "Patient", "name": [{"given": ["g"] * 20_000}]}).encode())
    assert caught.value.outcome["issue"][0]["expression"] == ["Patient.name[0].given"]
