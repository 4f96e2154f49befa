"""Write-time binding checks (terminologies.html#strength) on every create, update, patch and bundle entry:
a code outside a ``required`` binding of the R4 specification is refused (422, the element's path in the
issue's ``expression``); outside an ``extensible`` or ``preferred`` one it is a ``warning`` the response's
OperationOutcome carries, never a refusal. Only what the tenant's terminology can decide is judged
(``terminology.membership``).

The value sets are compiled once per tenant and kept while the tenant's CodeSystems and ValueSets are
unchanged: the number of their stored versions (any create, update or delete adds one) is read on each
check, two counts, and a change starts afresh. A tenant with none shares the base content's cache.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from fhir_server.definitions import base_bindings
from fhir_server.errors import OperationOutcomeError
from fhir_server.storage.port import HistoryQuery, TenantStore
from terminology.bindings import check_bindings
from terminology.content import base_content
from terminology.membership import Membership
from terminology.resolver import Layered

MAX_TENANTS = 64  # tenants whose compiled value sets are kept
Issue = dict[str, Any]

_base: Membership | None = None
_tenants: OrderedDict[str, tuple[tuple[int, int], Membership]] = OrderedDict()


def _base_membership() -> Membership:
    global _base
    if _base is None:
        _base = Membership(base_content())
    return _base


async def membership_for(store: TenantStore) -> Membership:
    """Value set membership as the tenant's terminology (over the base content) decides it."""
    stamp = (
        (await store.history(HistoryQuery("CodeSystem", count=0))).total,
        (await store.history(HistoryQuery("ValueSet", count=0))).total,
    )
    if stamp == (0, 0):
        return _base_membership()
    cached = _tenants.get(store.name)
    if cached is None or cached[0] != stamp:
        # the repository calls this module: its own module is imported here, not at the top
        from fhir_server.repository import Repository
        from fhir_server.tenant_terminology import TenantTerminology

        reader = Repository.system(store, reason="write-time binding checks")
        cached = _tenants[store.name] = (stamp, Membership(Layered([TenantTerminology(reader), base_content()])))
    _tenants.move_to_end(store.name)
    while len(_tenants) > MAX_TENANTS:
        _tenants.popitem(last=False)
    return cached[1]


async def base_binding_issues(store: TenantStore, resource_type: str, resource: dict[str, Any]) -> list[Issue]:
    """Every issue of the R4 bindings of ``resource_type`` (``$validate`` shows them as a write would judge)."""
    bindings = base_bindings(resource_type)
    return await check_bindings(resource, bindings, await membership_for(store)) if bindings else []


async def binding_issues(store: TenantStore, resource_type: str, resource: dict[str, Any]) -> tuple[Issue, ...]:
    """The base bindings' issues for a resource about to be written: raises 422 when a required binding is
    broken; answers the warnings and information issues otherwise."""
    issues = await base_binding_issues(store, resource_type, resource)
    if any(i["severity"] == "error" for i in issues):
        errors = [i for i in issues if i["severity"] == "error"]
        raise OperationOutcomeError(422, {"resourceType": "OperationOutcome", "issue": errors})
    return tuple(issues)
