"""The life of a workflow definition (plandefinition.html, publication status ``draft -> active -> retired``).

- A definition is created and edited as ``draft``; ``POST PlanDefinition/{id}/$activate`` publishes it (and
  retires the tenant's previous active definition of the same product, in the same transaction: at most one
  is active per product); ``$retire`` retires it. A status change by PUT or PATCH is refused (422).
- An ``active`` or ``retired`` version is immutable: PUT or PATCH answers 409; a new version is a new
  resource (same ``url``, a new ``version``, ``status`` draft).
- Every write of a workflow definition is parsed as a ``Flow`` first (422 naming the element that is wrong).
- A case created through FHIR with a product tag (``meta.tag`` in ``urn:dermbridge:product``) that has no
  applicable definition is refused with 422.
A PlanDefinition that is not a workflow definition (type other than ``workflow-definition`` and no step
codes) is left alone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fhir_server.api.messages import FhirRequest, FhirResponse
from fhir_server.errors import conflict, unprocessable
from fhir_server.patches import apply_patch
from fhir_server.repository import Repository
from fhir_server.workflow import codes
from fhir_server.workflow.definition import definition_product, parse_flow
from fhir_server.workflow.library import FlowLibrary, tagged_product
from fhir_server.workflow.tree import now

PUBLISHED = ("active", "retired")
WriteHook = Callable[[Repository, FhirRequest], Awaitable[None]]


def is_workflow_definition(resource: Any) -> bool:
    if not isinstance(resource, dict) or resource.get("resourceType") not in (None, "PlanDefinition"):
        return False
    kinds = [c.get("code") for c in (resource.get("type") or {}).get("coding") or [] if isinstance(c, dict)]
    concepts = [cc for a in resource.get("action") or [] if isinstance(a, dict) for cc in a.get("code") or []]
    steps = [c for cc in concepts if isinstance(cc, dict) for c in cc.get("coding") or []
             if isinstance(c, dict) and c.get("system") == codes.STEP_SYSTEM]  # fmt: skip
    return "workflow-definition" in kinds or bool(steps) or definition_product(resource) is not None


async def definition_hook(repo: Repository, request: FhirRequest) -> None:
    """Router write hook for PlanDefinition (create, update, patch, also inside Bundles)."""
    path = request.path
    current = await repo.current("PlanDefinition", path[1]) if len(path) > 1 else None
    if is_workflow_definition(current) and current is not None and current.get("status") in PUBLISHED:
        raise conflict(f"PlanDefinition/{path[1]} is {current['status']}: a published workflow definition is "
                       "immutable; create a new version (same url, a new version, status draft)")  # fmt: skip
    body = request.body
    if request.method == "PATCH" and current is not None:
        body = apply_patch(current, request.body, request.header("content-type"))
    if not is_workflow_definition(body) and not is_workflow_definition(current):
        return
    if len(path) == 1 and request.method == "PUT":
        raise unprocessable("a workflow definition is updated by its id (PUT PlanDefinition/{id})")
    status = body.get("status") if isinstance(body, dict) else None
    if status != "draft":
        raise unprocessable("a workflow definition is written as status draft; POST PlanDefinition/{id}/$activate "
                            "publishes it and $retire retires it", ["PlanDefinition.status"])  # fmt: skip
    parse_flow(body)


def case_hook(library: FlowLibrary) -> WriteHook:
    """Router write hook for DiagnosticReport: a case naming a product with no applicable definition is 422."""

    async def hook(repo: Repository, request: FhirRequest) -> None:
        if request.method == "PATCH" or not isinstance(request.body, dict):
            return
        product = tagged_product(request.body)
        if product is None:
            return
        choice = await library.for_product(repo, product)
        if choice.flow is None:
            raise unprocessable(f"{choice.refusal}: the case cannot be opened", ["DiagnosticReport.meta.tag"])

    return hook


async def _definition(repo: Repository, id: str) -> dict[str, Any]:
    resource = (await repo.read("PlanDefinition", id)).resource
    if not is_workflow_definition(resource):
        raise unprocessable(f"PlanDefinition/{id} is not a workflow definition")
    return resource


async def _put(repo: Repository, resource: dict[str, Any], status: str) -> dict[str, Any]:
    changed = {**resource, "status": status, "date": now()}
    stored = await repo.update(changed, resource_type="PlanDefinition", id=str(resource["id"]))
    return stored.resource


async def activate(repo: Repository, request: FhirRequest, resource_type: str | None, id: str | None) -> FhirResponse:
    """``POST PlanDefinition/{id}/$activate``: publish a draft; the product's previous active one is retired."""
    assert id is not None
    async with repo.store.transaction() as tx:
        bound = repo.within(tx)
        resource = await _definition(bound, id)
        if resource.get("status") == "active":
            return FhirResponse(200, resource)
        if resource.get("status") == "retired":
            raise conflict(f"PlanDefinition/{id} is retired; a retired version is not published again")
        flow = parse_flow(resource)
        criteria = [("context", f"{codes.PRODUCT_SYSTEM}|{flow.product}"), ("status", "active")]
        for previous in await bound.find("PlanDefinition", criteria, 100):
            await _put(bound, previous.resource, "retired")
        return FhirResponse(200, await _put(bound, resource, "active"))


async def retire(repo: Repository, request: FhirRequest, resource_type: str | None, id: str | None) -> FhirResponse:
    """``POST PlanDefinition/{id}/$retire``: the product's shipped default applies again (if it has one)."""
    assert id is not None
    async with repo.store.transaction() as tx:
        resource = await _definition(repo.within(tx), id)
        if resource.get("status") == "retired":
            return FhirResponse(200, resource)
        return FhirResponse(200, await _put(repo.within(tx), resource, "retired"))


def _operation(code: str, description: str) -> dict[str, Any]:
    return {
        "resourceType": "OperationDefinition",
        "id": f"PlanDefinition-{code}",
        "url": f"urn:dermbridge:OperationDefinition/PlanDefinition-{code}",
        "name": code.capitalize(),
        "status": "active",
        "kind": "operation",
        "description": description,
        "code": code,
        "resource": ["PlanDefinition"],
        "system": False,
        "type": False,
        "instance": True,
        "affectsState": True,
        "parameter": [{"name": "return", "use": "out", "min": 1, "max": "1", "type": "PlanDefinition"}],
    }


ACTIVATE_DEFINITION = _operation(
    "activate",
    "Publishes a draft workflow definition (status active); the tenant's previous active definition of the same "
    "product is retired in the same commit.",
)
RETIRE_DEFINITION = _operation(
    "retire",
    "Retires a workflow definition; its product's shipped default applies again when the tenant has no other active "
    "one.",
)
