"""Write-time binding checks (terminologies.html#strength) on every create, update, patch and bundle entry:
a code outside a ``required`` binding of the R4 specification is refused (422, the element's path in the
issue's ``expression``); outside an ``extensible`` or ``preferred`` one it is a ``warning`` the response's
OperationOutcome carries, never a refusal. Only what the tenant's terminology can decide is judged
(``terminology.membership``).

The value sets are compiled once per tenant and kept while the tenant's CodeSystems and ValueSets are
unchanged: the number of their stored versions (any create, update or delete adds one) is the stamp, and a
change starts afresh. A tenant with none shares the base content's cache. The stamp (two counts, two
queries) is read again at most every ``STAMP_SECONDS`` (profiled: it was a fifth of an update's storage calls),
and on every check for ``STAMP_SECONDS`` after this process writes a CodeSystem or ValueSet of the tenant
(``terminology_written``): a change made here is seen by the next write, one made by another process within
``STAMP_SECONDS``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from fhir_server.audit.audited_writes import AuditedWrites
from fhir_server.definitions import base_bindings
from fhir_server.errors import OperationOutcomeError
from fhir_server.storage.port import HistoryQuery, TenantStore
from terminology.bindings import check_bindings
from terminology.content import base_content
from terminology.membership import Membership
from terminology.resolver import Layered

MAX_TENANTS = 64  # tenants whose compiled value sets are kept
STAMP_SECONDS = 1.0  # how long a read stamp is trusted (unless this process writes terminology meanwhile)
TERMINOLOGY_TYPES = frozenset({"CodeSystem", "ValueSet"})
Issue = dict[str, Any]
Stamp = tuple[int, int]


@dataclass(slots=True)
class _Cached:
    store: TenantStore  # the store read (a tenant of that name in another engine is another tenant)
    stamp: Stamp
    membership: Membership | None  # None: the base content's
    trusted_until: float  # time.monotonic() up to which the stamp is not read again


_clock = time.monotonic  # the tests move it on
_base: Membership | None = None
_tenants: OrderedDict[str, _Cached] = OrderedDict()
_written: dict[str, float] = {}  # tenant -> monotonic time up to which its stamp is read on every check


def _base_membership() -> Membership:
    global _base
    if _base is None:
        _base = Membership(base_content())
    return _base


def terminology_written(tenant: str, resource_type: str) -> None:
    """Called on every write of a resource (``Repository``): a CodeSystem or ValueSet makes the next checks of
    the tenant read the stamp again, until ``STAMP_SECONDS`` after it (its transaction commits meanwhile)."""
    if resource_type in TERMINOLOGY_TYPES:
        now = _clock()
        for name in [name for name, until in _written.items() if until <= now]:
            del _written[name]  # bounded: only tenants written to in the last STAMP_SECONDS stay
        _written[tenant] = now + STAMP_SECONDS


async def _stamp(store: TenantStore) -> Stamp:
    return (
        (await store.history(HistoryQuery("CodeSystem", count=0))).total,
        (await store.history(HistoryQuery("ValueSet", count=0))).total,
    )


async def membership_for(store: TenantStore) -> Membership:
    """Value set membership as the tenant's terminology (over the base content) decides it."""
    store = AuditedWrites.unwrap(store)  # a request's wrapper: the store itself is what stays the same
    now = _clock()
    cached = _tenants.get(store.name)
    if cached is not None and cached.store is not store:
        cached = None
    if cached is None or now >= cached.trusted_until or now < _written.get(store.name, 0.0):
        stamp = await _stamp(store)
        if cached is None or cached.stamp != stamp:
            membership = None if stamp == (0, 0) else _tenant_membership(store)
            cached = _Cached(store, stamp, membership, now + STAMP_SECONDS)
        cached.trusted_until = now + STAMP_SECONDS
        _tenants[store.name] = cached
    _tenants.move_to_end(store.name)
    while len(_tenants) > MAX_TENANTS:
        _tenants.popitem(last=False)
    return cached.membership or _base_membership()


def _tenant_membership(store: TenantStore) -> Membership:
    # the repository calls this module: its own module is imported here, not at the top
    from fhir_server.repository import Repository
    from fhir_server.tenant_terminology import TenantTerminology

    reader = Repository.system(store, reason="write-time binding checks")
    return Membership(Layered([TenantTerminology(reader), base_content()]))


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
