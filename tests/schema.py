"""Check what the server returns against the R4 JSON schema (the vendored, R4-pruned copy)."""

from __future__ import annotations

import functools
from typing import Any

import jsonschema

from fhir_server.definitions import json_schema


@functools.cache
def _validator(resource_type: str) -> jsonschema.Draft6Validator:
    schema = json_schema()
    if resource_type not in schema["definitions"]:
        raise AssertionError(f"the server returned a {resource_type}, which R4 does not have")
    return jsonschema.Draft6Validator({"$ref": f"#/definitions/{resource_type}", "definitions": schema["definitions"]})


def assert_r4(resource: Any) -> None:
    """Fail with the first schema error of a resource (and of each resource inside a Bundle)."""
    assert isinstance(resource, dict) and isinstance(resource.get("resourceType"), str), resource
    if resource["resourceType"] == "Bundle":
        shell = dict(resource)
        entries = shell.pop("entry", [])
        _check(shell)
        for item in entries:
            inner = item.get("resource")
            if inner is not None:
                assert_r4(inner)
            outcome = (item.get("response") or {}).get("outcome")
            if outcome is not None:
                assert_r4(outcome)
        return
    _check(resource)


def _check(resource: dict[str, Any]) -> None:
    error = jsonschema.exceptions.best_match(_validator(resource["resourceType"]).iter_errors(resource))
    if error is not None:
        raise AssertionError(f"not R4 at {error.json_path}: {error.message}")
