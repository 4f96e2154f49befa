"""What a write's ``meta.profile`` claims mean (resource.html#Meta: "the resource conforms to these
profiles"): a claim of a known profile is checked (422 with the issues when the resource does not conform);
a claim of a profile the server does not know is refused (422), since the server cannot vouch for it.

Both are per tenant (a setting, ``StructureDefinition/$profile-enforcement``): ``known`` ``enforce`` or
``ignore``, ``unknown`` ``refuse`` or ``accept``. The check runs on clients' writes (REST and Bundle create,
update, conditional update, patch: ``fhir_server.write_guards``, after the guards of managed content); what
the server writes itself is built to its profiles and tested so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal
from weakref import WeakKeyDictionary

from fhir_server.api.messages import FhirRequest, FhirResponse
from fhir_server.api.parameters import named_values, values_of
from fhir_server.errors import OperationOutcomeError, bad_request
from fhir_server.operation_definitions import operation_definition, parameter
from fhir_server.profiling.registry import profiles
from fhir_server.profiling.validator import Issue, check, issue
from fhir_server.repository import Repository
from fhir_server.security.admin import require_admin
from fhir_server.storage.port import TenantReader, TenantTransaction
from fhir_server.tenant_settings import read_setting, write_setting
from fhir_server.tenant_terminology import resolver_for
from terminology.resolver import Layered, Resolver

SETTING = "conformance.profile-enforcement"
MAX_CLAIMS = 10  # profiles one resource may claim


@dataclass(frozen=True, slots=True)
class Enforcement:
    known: Literal["enforce", "ignore"] = "enforce"
    unknown: Literal["refuse", "accept"] = "refuse"


_IN_TRANSACTION: WeakKeyDictionary[TenantTransaction, Enforcement] = WeakKeyDictionary()


async def enforcement(reader: TenantReader) -> Enforcement:
    found = await read_setting(reader, SETTING)
    if not isinstance(found, dict):
        return Enforcement()
    return Enforcement(known=found.get("known", "enforce"), unknown=found.get("unknown", "refuse"))


def resolver(repo: Repository) -> Resolver:
    """The profiles' own value sets above the tenant's terminology and the shipped content."""
    return Layered([profiles().value_sets, resolver_for(repo)])


async def claimed_issues(repo: Repository, resource: dict[str, Any], policy: Enforcement) -> list[Issue]:
    """The issues of a resource's ``meta.profile`` claims under ``policy``."""
    claims = (resource.get("meta") or {}).get("profile") if isinstance(resource.get("meta"), dict) else None
    if not isinstance(claims, list):
        return []
    resource_type = str(resource.get("resourceType"))
    if len(claims) > MAX_CLAIMS:
        return [issue("error", "too-costly", f"at most {MAX_CLAIMS} profiles", f"{resource_type}.meta.profile")]
    found: list[Issue] = []
    for i, url in enumerate(claims):
        where = f"{resource_type}.meta.profile[{i}]"
        if not isinstance(url, str):
            continue
        if not profiles().known(url):
            if policy.unknown == "refuse":
                found.append(issue("error", "processing", f"the profile {url} is not known to this server", where))
            continue
        structure = profiles().structure(url)
        if policy.known == "enforce" and structure is not None:
            found += await check(structure, resource, resolver(repo))
    return found


async def check_claimed_profiles(repo: Repository, resource_type: str, resource: dict[str, Any]) -> None:
    """Content check of clients' writes (``fhir_server.write_guards``): refuses (422) a resource that fails a
    profile it claims, or claims one the server does not know."""
    if not isinstance(resource.get("meta"), dict) or not resource["meta"].get("profile"):
        return
    policy = await _transaction_enforcement(repo.transaction) if repo.transaction else await enforcement(repo.store)
    errors = [i for i in await claimed_issues(repo, resource, policy) if i["severity"] == "error"]
    if errors:
        raise OperationOutcomeError(422, {"resourceType": "OperationOutcome", "issue": errors})


async def _transaction_enforcement(tx: TenantTransaction) -> Enforcement:
    """The policy read once per transaction: a Bundle's entries share it (profiled: on PostgreSQL its read was
    two of an entry's dozen statements). The setting is written by its own operation, outside any Bundle's
    transaction."""
    if (policy := _IN_TRANSACTION.get(tx)) is None:
        policy = _IN_TRANSACTION[tx] = await enforcement(tx)
    return policy


async def enforcement_operation(
    repo: Repository, request: FhirRequest, resource_type: str | None, id: str | None
) -> FhirResponse:
    """``StructureDefinition/$profile-enforcement``: answers the tenant's policy; ``known`` and ``unknown``
    (admin scope) change it."""
    given = named_values(request)
    current = await enforcement(repo.store)
    changes = {name: values_of(given, name) for name in ("known", "unknown")}
    if any(changes.values()):
        require_admin(request.access, "changing the profile enforcement")
        wanted = {**asdict(current), **{k: v[0] for k, v in changes.items() if v}}
        if wanted["known"] not in ("enforce", "ignore") or wanted["unknown"] not in ("refuse", "accept"):
            raise bad_request("known is enforce or ignore, unknown is refuse or accept", ["known"])
        await write_setting(repo.store, SETTING, wanted)
        current = Enforcement(**wanted)
    output = [{"name": k, "valueCode": v} for k, v in asdict(current).items()]
    return FhirResponse(200, {"resourceType": "Parameters", "parameter": output})


ENFORCEMENT_DEFINITION = operation_definition(
    "profile-enforcement",
    level="type",
    resource=["StructureDefinition"],
    description="How this tenant treats meta.profile on a write: a known profile is enforced (422 when the resource "
    "does not conform) or ignored; an unknown profile is refused (422) or accepted. Given values (admin scope) "
    "change the policy; without parameters it is answered.",
    parameters=[
        parameter("known", "in", "code"),
        parameter("unknown", "in", "code"),
        parameter("known", "out", "code", min=1),
        parameter("unknown", "out", "code", min=1),
    ],
)
