"""Resource validation: the R4 JSON schema, then fhir.resources' R4B models (structure and datatypes).

The schema catches what R4 forbids (unknown elements, codes outside required bindings,
R4B-only elements); the models check datatypes and cardinality. Both report the path
of the offending element as a FHIRPath-style ``issue.expression``.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import jsonschema
import jsonschema_rs
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from fhir_server.definitions import json_schema, resource_types
from fhir_server.errors import OperationOutcomeError, Outcome, bad_request, not_found
from fhir_server.limits import MAX_RESOURCE_VALUES, too_large

MAX_ISSUES = 20
_FIELD_IN_MESSAGE = re.compile(r"field '(\w+)'")


@functools.cache
def _fast_validator(resource_type: str) -> Any:
    """Compiled (Rust) validator: the common, valid case costs microseconds."""
    schema = json_schema()
    return jsonschema_rs.Draft6Validator(
        {"$ref": f"#/definitions/{resource_type}", "definitions": schema["definitions"]}
    )


@functools.cache
def _schema_validator(resource_type: str) -> jsonschema.Draft6Validator:
    """The reference validator, only run to explain why a resource is invalid."""
    schema = json_schema()
    return jsonschema.Draft6Validator({"$ref": f"#/definitions/{resource_type}", "definitions": schema["definitions"]})


# what DICOM ingest, the inference worker and the audit trail write, and what clients send most
WARM_TYPES = ("Patient", "ImagingStudy", "Media", "DiagnosticReport", "Endpoint", "Observation", "Bundle",
              "AuditEvent", "Task", "Provenance", "Device", "Binary", "Consent")  # fmt: skip


def warm_up(types: tuple[str, ...] = WARM_TYPES) -> None:
    """Compile the validators of the busiest types now, not on the first requests that need them."""
    for resource_type in types:
        _fast_validator(resource_type)


def check_type(resource_type: str) -> None:
    if resource_type not in resource_types():
        raise not_found(f"unknown resource type {resource_type!r}")


def validate(resource: Any, expected_type: str | None = None, *, server_built: bool = False) -> dict[str, Any]:
    """Validate a resource's JSON; raises 400 for the wrong shape or type, 422 for invalid content.

    ``server_built``: the resource was built by the server itself (DICOM sync, inference, audit);
    the R4 schema still applies; the JSON-rules walk and the R4B model pass, which guard client
    input, are skipped.
    """
    if not isinstance(resource, dict):
        raise bad_request("the body must be a JSON object (a FHIR resource)")
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str):
        raise bad_request("the resource has no resourceType", ["resourceType"])
    if expected_type is not None and resource_type != expected_type:
        raise bad_request(f"the body is a {resource_type}, the URL names {expected_type}", ["resourceType"])
    if resource_type not in resource_types():
        raise OperationOutcomeError.of(
            422, "not-supported", f"unknown resource type {resource_type!r}", ["resourceType"]
        )
    issues = [] if server_built else _json_rules(resource, resource_type)
    fast = _fast_validator(resource_type)
    if not fast.is_valid(resource):
        detailed = [_schema_issue(resource_type, e) for e in _schema_validator(resource_type).iter_errors(resource)]
        issues += detailed or [
            _issue("invalid", _short(e.message), _expression(resource_type, e.instance_path))
            for e in fast.iter_errors(resource)
        ]
    if not issues and not server_built:
        issues = _model_issues(resource_type, resource)
    if issues:
        raise OperationOutcomeError(422, {"resourceType": "OperationOutcome", "issue": issues[:MAX_ISSUES]})
    return resource


def _json_rules(resource: dict[str, Any], resource_type: str) -> list[dict[str, Any]]:
    """json.html#xml: no null (outside primitive-extension arrays), no empty arrays or objects;
    dom-2: a contained resource contains no resources itself. At most ``MAX_RESOURCE_VALUES`` values
    (413 beyond): they bound the work of the schema, the model and the index extraction that follow."""
    issues: list[dict[str, Any]] = []
    stack: list[tuple[Any, list[Any], bool]] = [(resource, [], False)]
    values = 0
    while stack and len(issues) < MAX_ISSUES:
        value, path, nulls_allowed = stack.pop()
        values += 1
        if values > MAX_RESOURCE_VALUES:
            raise too_large(f"the {resource_type} has more than {MAX_RESOURCE_VALUES} JSON values", [resource_type])
        if value is None and not nulls_allowed:
            issues.append(_issue("invalid", "null is not allowed in FHIR JSON", _expression(resource_type, path)))
        elif isinstance(value, list):
            if not value:
                issues.append(_issue("invalid", "empty arrays are not allowed", _expression(resource_type, path)))
            shadow = bool(path) and isinstance(path[-1], str) and path[-1].startswith("_")
            stack.extend((item, [*path, i], shadow) for i, item in enumerate(value))
        elif isinstance(value, dict):
            if not value:
                issues.append(_issue("invalid", "empty objects are not allowed", _expression(resource_type, path)))
            if path and path[-2:-1] == ["contained"] and "contained" in value:
                issues.append(
                    _issue(
                        "invariant",
                        "dom-2: a contained resource cannot contain resources",
                        _expression(resource_type, [*path, "contained"]),
                    )
                )
            stack.extend((item, [*path, key], False) for key, item in value.items())
    return issues


def _expression(resource_type: str, path: Any) -> str:
    text = resource_type
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def _schema_issue(resource_type: str, error: jsonschema.ValidationError) -> dict[str, Any]:
    path = list(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set(error.schema.get("properties", {}))
        extra = [k for k in error.instance if k not in allowed]
        if extra:
            path.append(extra[0])
            message = f"unknown element {extra[0]!r}"
            return _issue("structure", message, _expression(resource_type, path))
    if error.validator == "oneOf" and error.context:  # contained resources: report the best match
        best = jsonschema.exceptions.best_match(error.context)
        return _schema_issue(resource_type, best)
    if error.validator == "required" and isinstance(error.validator_value, list) and isinstance(error.instance, dict):
        missing = [name for name in error.validator_value if name not in error.instance]
        path.extend(missing[:1])
        return _issue("required", _short(error.message), _expression(resource_type, path))
    return _issue("invalid", _short(error.message), _expression(resource_type, path))


def _short(message: str) -> str:
    return message if len(message) <= 300 else message[:297] + "..."


def _model_issues(resource_type: str, resource: dict[str, Any]) -> list[dict[str, Any]]:
    try:
        get_fhir_model_class(resource_type).model_validate(resource)
    except ValidationError as exc:
        return [_model_issue(resource_type, err) for err in exc.errors()]
    except (ValueError, TypeError) as exc:
        return [_issue("invalid", _short(str(exc)), resource_type)]
    return []


def _model_issue(resource_type: str, error: Any) -> dict[str, Any]:
    message = str(error.get("msg"))
    location = list(error.get("loc", ()))
    named = _FIELD_IN_MESSAGE.search(message)
    if named and (not location or location[-1] != named.group(1)):
        location.append(named.group(1))  # root validators name the element only in their message
    code = "required" if error.get("type") == "missing" or "required" in message else "invalid"
    return _issue(code, _short(message), _expression(resource_type, location))


def _issue(code: str, diagnostics: str, expression: str) -> dict[str, Any]:
    return {"severity": "error", "code": code, "diagnostics": diagnostics, "expression": [expression]}


def outcome_of(issues: list[dict[str, Any]]) -> Outcome:
    return {"resourceType": "OperationOutcome", "issue": issues}
