"""Apply a PATCH document to a resource (http.html#patch): JSON Patch or JSON merge patch.

- ``application/json-patch+json``, or any JSON array: JSON Patch (RFC 6902), checked within bounds.
- a JSON object (``application/merge-patch+json``, or ``application/json`` as fhirpy's ``patch()``
  sends a resource fragment): JSON merge patch (RFC 7386): members replace, ``null`` removes.
- a ``Parameters`` resource is a FHIRPath Patch (fhirpatch.html), which is not supported: 415.

A patch cannot make the work of a write unbounded: a ``copy`` operation can double the document,
so every value a patch adds or copies counts against ``MAX_RESOURCE_VALUES``.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import jsonpointer

from fhir_server.errors import OperationOutcomeError, bad_request, unprocessable
from fhir_server.limits import MAX_RESOURCE_VALUES, too_large

JSON_PATCH = "application/json-patch+json"


def apply_patch(resource: dict[str, Any], document: Any, content_type: str | None) -> dict[str, Any]:
    """The patched copy of ``resource``; 400/415 for a document of the wrong kind, 422 when it cannot apply."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if isinstance(document, list):
        patched = _json_patch(resource, document)
    elif kind == JSON_PATCH:
        raise bad_request("a JSON Patch body (application/json-patch+json) must be an array of operations")
    elif isinstance(document, dict) and document.get("resourceType") == "Parameters":
        raise OperationOutcomeError.of(
            415, "not-supported", "FHIRPath Patch is not supported: send a JSON Patch or a JSON merge patch"
        )
    elif isinstance(document, dict):
        patched = merge_patch(resource, document)
    else:
        raise bad_request("a PATCH body is a JSON Patch array or a JSON merge patch object")
    if not isinstance(patched, dict):
        raise unprocessable("the patched document is not a JSON object (a FHIR resource)")
    return patched


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 section 2 (the body's depth is bounded, so the recursion is)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = merge_patch(result.get(name), value)
    return result


def _json_patch(resource: dict[str, Any], operations: list[Any]) -> Any:
    """RFC 6902, one operation at a time, so that what each adds or copies is counted as it grows."""
    document: Any = copy.deepcopy(resource)
    budget = MAX_RESOURCE_VALUES - _count(document, MAX_RESOURCE_VALUES)
    for position, operation in enumerate(operations):
        if not isinstance(operation, dict):
            raise bad_request(f"JSON Patch operation {position} is not an object", [f"[{position}]"])
        try:
            budget -= _added(document, operation, budget)
            if budget < 0:
                raise too_large(f"the patch makes the resource larger than {MAX_RESOURCE_VALUES} JSON values")
            document = jsonpatch.JsonPatch([operation]).apply(document, in_place=True)
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException, TypeError, KeyError, ValueError) as exc:
            raise unprocessable(f"JSON Patch operation {position} cannot be applied: {exc}", [f"[{position}]"]) from exc
    return document


def _added(document: Any, operation: dict[str, Any], budget: int) -> int:
    """How many values an operation adds at most: its value, or the part of the document it copies."""
    if "value" in operation:
        return _count(operation["value"], budget + 1)
    source = operation.get("from")
    if operation.get("op") != "copy" or not isinstance(source, str):
        return 0
    return _count(jsonpointer.resolve_pointer(document, source), budget + 1)


def _count(value: Any, limit: int) -> int:
    """The number of JSON values in ``value``, stopping once ``limit`` is reached."""
    count, stack = 0, [value]
    while stack and count < limit:
        node = stack.pop()
        count += 1
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return count
