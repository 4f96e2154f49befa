"""The FHIR edge of the terminology module (terminology-service.html): ``CodeSystem/$lookup``,
``CodeSystem/$subsumes``, ``ValueSet/$expand``, ``ValueSet/$validate-code`` (and ``CodeSystem/$validate-code``)
and ``ConceptMap/$translate``, at type and instance level, with a ``Parameters`` body (POST) or query
parameters (GET). The work is ``terminology.operations``'; this module reads the inputs, finds the
resources as the caller may see them and turns a ``TerminologyError`` into an OperationOutcome."""

from __future__ import annotations

import functools
from collections.abc import Awaitable
from typing import Any, TypeVar

from fhir_server.api.messages import FhirRequest, FhirResponse
from fhir_server.api.parameters import named_values, one_of
from fhir_server.api.router import FhirRouter, Operation
from fhir_server.api.terminology_definitions import DEFINITIONS
from fhir_server.errors import bad_request
from fhir_server.repository import Repository
from fhir_server.tenant_terminology import (
    TenantTerminology,
    as_outcome_error,
    read_terminology_resource,
    resolver_for,
)
from fhir_server.validation import validate
from terminology import operations
from terminology.content import TYPES, base_content
from terminology.errors import TerminologyError, unknown
from terminology.resolver import Resolver, require_code_system, require_value_set, split_canonical

Given = list[tuple[str, Any]]


T = TypeVar("T")


async def _run(work: Awaitable[T]) -> T:
    """The terminology package's work, its errors as OperationOutcomes."""
    try:
        return await work
    except TerminologyError as error:
        raise as_outcome_error(error) from error


async def _answer(work: Awaitable[dict[str, Any]]) -> FhirResponse:
    return FhirResponse(200, await _run(work))


def _text(given: Given, name: str) -> str | None:
    value = one_of(given, name)
    if value is not None and not isinstance(value, str):
        raise bad_request(f"{name} must be a string", [name])
    return value or None


def _int(given: Given, name: str) -> int | None:
    value = one_of(given, name)
    if value is None:
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 9:
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise bad_request(f"{name} must be a whole number of at least 0", [name])
    return value


def _resource(given: Given, name: str, resource_type: str) -> dict[str, Any] | None:
    value = one_of(given, name)
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("resourceType") != resource_type:
        raise bad_request(f"{name} must be a {resource_type} resource", [name])
    return validate(value, resource_type)


def _codings(given: Given, coding_name: str = "coding") -> list[dict[str, Any]]:
    """The codings to work on: ``coding``, each of ``codeableConcept``'s, or ``system`` + ``code``."""
    coding = one_of(given, coding_name)
    concept = one_of(given, "codeableConcept")
    if isinstance(coding, dict):
        return [coding] if isinstance(coding.get("code"), str) else []
    if isinstance(concept, dict):
        return [c for c in concept.get("coding") or [] if isinstance(c, dict) and isinstance(c.get("code"), str)]
    if coding is not None or concept is not None:
        raise bad_request(f"{coding_name} must be a Coding and codeableConcept a CodeableConcept", [coding_name])
    code = _text(given, "code")
    return [{"system": _text(given, "system"), "code": code, "display": _text(given, "display")}] if code else []


async def _pinned(repo: Repository, resource_type: str, id: str | None) -> dict[str, Any] | None:
    return await read_terminology_resource(repo, resource_type, id) if id is not None else None


async def lookup(repo: Repository, request: FhirRequest, resource_type: str | None, id: str | None) -> FhirResponse:
    """codesystem-operation-lookup.html"""
    given = named_values(request)
    pinned = await _pinned(repo, "CodeSystem", id)
    codings = _codings(given)
    coding = codings[0] if codings else {}
    system = coding.get("system") or (pinned or {}).get("url")
    if not system or not coding.get("code"):
        raise bad_request("$lookup needs system and code, or coding", ["code"])
    version = coding.get("version") or _text(given, "version")
    return await _answer(operations.lookup(resolver_for(repo, pinned), system, coding["code"], version))


async def subsumes(repo: Repository, request: FhirRequest, resource_type: str | None, id: str | None) -> FhirResponse:
    """codesystem-operation-subsumes.html"""
    given = named_values(request)
    pinned = await _pinned(repo, "CodeSystem", id)
    pair = []
    for name in ("A", "B"):
        coding = one_of(given, f"coding{name}")
        code = coding.get("code") if isinstance(coding, dict) else _text(given, f"code{name}")
        if not code:
            raise bad_request(f"$subsumes needs code{name} or coding{name}", [f"code{name}"])
        pair.append((code, coding.get("system") if isinstance(coding, dict) else None))
    system = _text(given, "system") or pair[0][1] or (pinned or {}).get("url")
    if not system:
        raise bad_request("$subsumes needs system (or codings with a system)", ["system"])
    if any(s is not None and s != system for _, s in pair):
        raise bad_request("codingA and codingB must be of the same code system", ["codingB"])
    work = operations.subsumes(resolver_for(repo, pinned), system, pair[0][0], pair[1][0], _text(given, "version"))
    return await _answer(work)


async def _value_set(repo: Repository, given: Given, id: str | None, resolver: Resolver) -> dict[str, Any]:
    """The value set an operation works on: the instance, an inline ``valueSet``, or ``url``."""
    if id is not None:
        return await read_terminology_resource(repo, "ValueSet", id)
    inline = _resource(given, "valueSet", "ValueSet")
    if inline is not None:
        return inline
    url = _text(given, "url")
    if url is None:
        raise bad_request("name the value set: url, valueSet, or invoke the operation on a ValueSet", ["url"])
    base, version = split_canonical(url, _text(given, "valueSetVersion"))
    return await _run(require_value_set(resolver, base, version, "url"))


async def expand(repo: Repository, request: FhirRequest, resource_type: str | None, id: str | None) -> FhirResponse:
    """valueset-operation-expand.html"""
    given = named_values(request)
    resolver = resolver_for(repo)
    value_set = await _value_set(repo, given, id, resolver)
    work = operations.expand(
        resolver, value_set, text=_text(given, "filter"), offset=_int(given, "offset") or 0, count=_int(given, "count")
    )
    return await _answer(work)


async def validate_code(
    repo: Repository, request: FhirRequest, resource_type: str | None, id: str | None
) -> FhirResponse:
    """valueset-operation-validate-code.html and codesystem-operation-validate-code.html: ``result`` true
    when one of the codings given is valid."""
    given = named_values(request)
    codings = _codings(given)
    if not codings:
        raise bad_request("$validate-code needs code (with system), coding or codeableConcept", ["code"])
    if resource_type == "CodeSystem":
        return await _answer(_validate_in_code_system(repo, given, id, codings))
    resolver = resolver_for(repo)
    value_set = await _value_set(repo, given, id, resolver)
    answer: dict[str, Any] = {}
    for coding in codings:
        display = coding.get("display")
        answer = await _run(
            operations.validate_code(resolver, value_set, coding.get("system"), coding["code"], display)
        )
        if answer["parameter"][0]["valueBoolean"]:
            break
    return FhirResponse(200, answer)


async def _validate_in_code_system(
    repo: Repository, given: Given, id: str | None, codings: list[dict[str, Any]]
) -> dict[str, Any]:
    """codesystem-operation-validate-code.html: the first coding's code looked up in the code system."""
    pinned = await _pinned(repo, "CodeSystem", id)
    url = (pinned or {}).get("url") or _text(given, "url") or codings[0].get("system")
    if not url:
        raise bad_request("name the code system: url, or invoke the operation on a CodeSystem", ["url"])
    index = await require_code_system(resolver_for(repo, pinned), url, _text(given, "version"), "url")
    coding = codings[0]
    return operations.validate_in_code_system(index, coding["code"], coding.get("display"))


async def _concept_maps(repo: Repository, given: Given, id: str | None, system: str) -> list[dict[str, Any]]:
    if id is not None:
        return [await read_terminology_resource(repo, "ConceptMap", id)]
    inline = _resource(given, "conceptMap", "ConceptMap")
    if inline is not None:
        return [inline]
    url = _text(given, "url")
    if url is None:
        return await resolver_for(repo).concept_maps(system)
    stored = await TenantTerminology(repo).concept_map(url)
    found = stored or base_content().by_type["ConceptMap"].get(url)
    if found is None:
        raise as_outcome_error(unknown(f"concept map {url}", "url"))
    return [found]


async def translate(repo: Repository, request: FhirRequest, resource_type: str | None, id: str | None) -> FhirResponse:
    """conceptmap-operation-translate.html (source to target; ``reverse`` is not supported)."""
    given = named_values(request)
    if one_of(given, "reverse") in (True, "true"):
        raise as_outcome_error(
            TerminologyError(400, "not-supported", "reverse translation is not supported", ["reverse"])
        )
    codings = _codings(given)
    if not codings or not codings[0].get("system"):
        raise bad_request("$translate needs system and code, coding or codeableConcept", ["code"])
    coding = codings[0]
    maps = await _concept_maps(repo, given, id, coding["system"])
    work = operations.translate(
        resolver_for(repo), maps, coding["system"], str(coding["code"]), _text(given, "targetsystem")
    )
    return await _answer(work)


HANDLERS = {
    "lookup": (("CodeSystem",), lookup),
    "subsumes": (("CodeSystem",), subsumes),
    "expand": (("ValueSet",), expand),
    "validate-code": (("ValueSet", "CodeSystem"), validate_code),
    "translate": (("ConceptMap",), translate),
}


def _shipped(resource_type: str, id: str) -> dict[str, Any] | None:
    return base_content().read(resource_type, id)


def register_terminology(router: FhirRouter) -> None:
    """Each terminology operation, at type and instance level, for callers who may read its resource type."""
    for name, (types, handler) in HANDLERS.items():
        router.register(Operation(name, types, None, handler, DEFINITIONS[name]))
    for resource_type in TYPES:
        router.read_fallbacks[resource_type] = functools.partial(_shipped, resource_type)
