"""Reading the input of a FHIR operation (operations.html#request): a ``Parameters`` body, or, for
GET and simple types, the query string."""

from __future__ import annotations

from typing import Any

from fhir_server.api.messages import FhirRequest
from fhir_server.errors import bad_request

MAX_PARAMETERS = 100


def _value(parameter: dict[str, Any]) -> Any:
    if "resource" in parameter:
        return parameter["resource"]
    if "part" in parameter:
        return parameter["part"]
    return next((v for k, v in parameter.items() if k.startswith("value")), None)


def named_values(request: FhirRequest) -> list[tuple[str, Any]]:
    """(name, value) of each parameter in order: a ``value[x]``, a ``resource``, or the ``part`` list."""
    body = request.body
    if isinstance(body, dict):
        if body.get("resourceType") != "Parameters":
            raise bad_request("the operation takes a Parameters resource", ["resourceType"])
        parameters = body.get("parameter") or []
        if len(parameters) > MAX_PARAMETERS:
            raise bad_request(f"at most {MAX_PARAMETERS} parameters", ["Parameters.parameter"])
        return [(p["name"], _value(p)) for p in parameters if isinstance(p, dict) and isinstance(p.get("name"), str)]
    return [(k, v) for k, v in request.params if not k.startswith("_")]


def values_of(given: list[tuple[str, Any]], name: str) -> list[Any]:
    return [value for key, value in given if key == name]


def one_of(given: list[tuple[str, Any]], name: str) -> Any | None:
    """The parameter's one value (None when absent); 400 when it is repeated."""
    found = values_of(given, name)
    if len(found) > 1:
        raise bad_request(f"the parameter {name!r} is given {len(found)} times; it takes one value", [name])
    return found[0] if found else None
