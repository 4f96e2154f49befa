"""``$validate`` (resource-operation-validate.html): ``[type]/$validate`` and ``[type]/[id]/$validate``, a
``Parameters`` in (``resource``, ``mode`` create/update/delete, ``profile``) or the resource itself as the
body, an ``OperationOutcome`` out (200, whatever the verdict: the outcome's errors are the answer).

A resource is checked as a write would check it (the R4 schema and model), then against the ``profile``
asked for, the profiles it claims in ``meta.profile`` (as the tenant's enforcement says: an unknown one is an
error where writes refuse it, else a warning), or, claiming none, its type's base definition.
"""

from __future__ import annotations

from typing import Any

from fhir_server.api.messages import FhirRequest, FhirResponse
from fhir_server.api.parameters import named_values, one_of
from fhir_server.binding_checks import base_binding_issues
from fhir_server.errors import OperationOutcomeError, bad_request
from fhir_server.operation_definitions import operation_definition, parameter, returns
from fhir_server.profiling.enforcement import Enforcement, claimed_issues, enforcement, resolver
from fhir_server.profiling.registry import CORE, profiles
from fhir_server.profiling.validator import Issue, check, issue
from fhir_server.repository import Repository
from fhir_server.validation import validate

MODES = ("create", "update", "delete")
ALL_OK = issue("information", "informational", "no issues found")


def _inputs(request: FhirRequest, resource_type: str) -> tuple[dict[str, Any] | None, str | None, str | None]:
    """(resource, mode, profile) from a Parameters body, a bare resource body, or the query."""
    body = request.body
    if isinstance(body, dict) and body.get("resourceType") not in (None, "Parameters"):
        given = [(k, v) for k, v in request.params if not k.startswith("_")]
        resource: Any = body
    else:
        given = named_values(request)
        resource = one_of(given, "resource")
    mode, profile = one_of(given, "mode"), one_of(given, "profile")
    if mode is not None and mode not in MODES:
        raise bad_request(f"mode is one of {', '.join(MODES)}", ["mode"])
    if profile is not None and not isinstance(profile, str):
        raise bad_request("profile is a canonical URL", ["profile"])
    if resource is not None and not isinstance(resource, dict):
        raise bad_request("resource is a FHIR resource", ["resource"])
    return resource, mode, profile


def _base_issues(resource: dict[str, Any], resource_type: str) -> list[Issue]:
    try:
        validate(resource, resource_type)
    except OperationOutcomeError as error:
        return list(error.outcome.get("issue", []))
    return []


async def _profile_issues(
    repo: Repository, resource: dict[str, Any], resource_type: str, profile: str | None
) -> list[Issue]:
    if profile is not None:
        structure = profiles().structure(profile)
        if structure is None and profiles().known(profile):
            return [_not_held(profile, "profile")]
        if structure is None:
            return [issue("error", "not-found", f"the profile {profile} is not known to this server", "profile")]
        return await check(structure, resource, resolver(repo))
    if (resource.get("meta") or {}).get("profile"):
        unknown = (await enforcement(repo.transaction or repo.store)).unknown  # $validate checks every known claim
        claimed = await claimed_issues(repo, resource, Enforcement(known="enforce", unknown=unknown))
        return claimed if unknown == "refuse" else claimed + _unknown_warnings(resource)
    base = profiles().structure(CORE + resource_type)
    return await check(base, resource, resolver(repo)) if base is not None else []


def _not_held(url: str, expression: str) -> Issue:
    """A profile the server recognises (an R4 type's, or one a registered profile complies with) but does not
    hold: what the R4 schema and model check is all that was checked."""
    return issue("warning", "not-supported", f"the profile {url} is not held here: only the R4 schema was checked",
                 expression)  # fmt: skip


def _unknown_warnings(resource: dict[str, Any]) -> list[Issue]:
    claims = (resource.get("meta") or {}).get("profile") or []
    return [
        issue("warning", "processing", f"the profile {url} is not known to this server: not checked",
              f"{resource.get('resourceType')}.meta.profile[{i}]")
        for i, url in enumerate(claims) if isinstance(url, str) and not profiles().known(url)
    ]  # fmt: skip


async def validate_operation(
    repo: Repository, request: FhirRequest, resource_type: str | None, id: str | None
) -> FhirResponse:
    assert resource_type is not None
    resource, mode, profile = _inputs(request, resource_type)
    if mode == "delete":
        if id is None:
            raise bad_request("mode delete validates the deletion of an instance: [type]/[id]/$validate", ["mode"])
        await repo.read(resource_type, id)  # 404 / 410 as a read would say
        found = [] if repo.may(resource_type, "d") else [issue("error", "forbidden", "you may not delete it")]
        return _answer(found)
    if resource is None:
        if id is None:
            raise bad_request("$validate needs a resource (the body, or the parameter resource)", ["resource"])
        resource = (await repo.read(resource_type, id)).resource
    found = _base_issues(resource, resource_type)
    if mode == "update" and id is not None and resource.get("id") != id:
        found.append(
            issue("error", "invalid", f"an update of {resource_type}/{id} carries the id {id!r}", f"{resource_type}.id")
        )
    if not found:
        found = await _write_time_issues(repo, resource, resource_type, profile)
    return _answer(found)


async def _write_time_issues(
    repo: Repository, resource: dict[str, Any], resource_type: str, profile: str | None
) -> list[Issue]:
    """The R4 bindings as every write checks them, then the profile; a profile's binding error on an element
    the R4 check already refused is not said twice."""
    base = await base_binding_issues(repo.store, resource_type, resource)
    refused = {tuple(i.get("expression") or ()) for i in base if i["severity"] == "error"}
    profiled = await _profile_issues(repo, resource, resource_type, profile)
    return base + [
        i for i in profiled if not (i.get("code") == "code-invalid" and tuple(i.get("expression") or ()) in refused)
    ]


def _answer(issues: list[Issue]) -> FhirResponse:
    return FhirResponse(200, {"resourceType": "OperationOutcome", "issue": issues or [ALL_OK]})


VALIDATE_DEFINITION = operation_definition(
    "validate",
    level="type",
    id="Resource-validate",
    url="http://hl7.org/fhir/OperationDefinition/Resource-validate",
    affects_state=False,
    description="Validates a resource against the R4 definitions, a profile (profile), or the profiles it claims "
    "(meta.profile): cardinality, types, fixed and pattern values, slicing, invariants and required bindings; "
    "mode create, update or delete says which write is meant. At type and instance level.",
    parameters=[
        parameter("resource", "in", "Resource"),
        parameter("mode", "in", "code"),
        parameter("profile", "in", "uri"),
        returns("OperationOutcome"),
    ],
)
VALIDATE_DEFINITION.update(instance=True, resource=["Resource"])  # every type, and each instance
