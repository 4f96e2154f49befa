"""The code lists behind the token modifiers that need a terminology (search.html#modifiers): ``:in`` and
``:not-in`` a ValueSet (by canonical URL), ``:below`` and ``:above`` a ``system|code`` (is-a, the code
itself included). Resolved before the search is parsed, through the tenant's terminology
(``fhir_server.tenant_terminology``); each list is bounded by ``MAX_MODIFIER_CODES``.

Lists are cached per tenant and value; a cached list is used again only while every tenant resource it
was built from (or the absence of one) is unchanged, so an update to a tenant's ValueSet is seen at once.
"""

from __future__ import annotations

from collections import OrderedDict

from fhir_server.errors import OperationOutcomeError, bad_request, too_costly
from fhir_server.limits import MAX_MODIFIER_CODES, MAX_SEARCH_CODES
from fhir_server.repository import Repository, Stored
from fhir_server.search.parameters import lookup
from fhir_server.search.request import TERMINOLOGY_MODIFIERS, split_or, split_pipe, unescape
from fhir_server.tenant_terminology import TenantTerminology, as_outcome_error
from terminology.content import base_content
from terminology.errors import TerminologyError
from terminology.expansion import Expander
from terminology.resolver import Layered, require_code_system, require_value_set, split_canonical

Codes = tuple[tuple[str, str], ...]
Seen = tuple[tuple[str, str, str | None, tuple[str, int] | None], ...]  # (type, url, version) -> (id, version)
MAX_CACHED = 256


class _Recording(TenantTerminology):
    """The tenant layer, noting which of its resources (or their absence) an answer rests on."""

    def __init__(self, repo: Repository) -> None:
        super().__init__(repo)
        self.seen: dict[tuple[str, str, str | None], tuple[str, int] | None] = {}

    async def find_stored(self, resource_type: str, url: str, version: str | None) -> Stored | None:
        found = await super().find_stored(resource_type, url, version)
        self.seen[(resource_type, url, version)] = _identity(found)
        return found


def _identity(found: Stored | None) -> tuple[str, int] | None:
    return (str(found.resource.get("id")), found.version.version) if found is not None else None


_cache: OrderedDict[tuple[str, str, str], tuple[Codes, Seen]] = OrderedDict()


async def _still_valid(repo: Repository, seen: Seen) -> bool:
    probe = TenantTerminology(repo)
    for resource_type, url, version, was in seen:
        if _identity(await probe.find_stored(resource_type, url, version)) != was:
            return False
    return True


async def _resolve(repo: Repository, modifier: str, value: str, code: str) -> Codes:
    key = (repo.tenant, modifier, value)
    cached = _cache.get(key)
    if cached is not None and await _still_valid(repo, cached[1]):
        _cache.move_to_end(key)
        return cached[0]
    tenant = _Recording(repo)
    resolver = Layered([tenant, base_content()])
    try:
        codes = await (_in(resolver, value) if modifier in ("in", "not-in") else _hierarchy(resolver, modifier, value))
    except TerminologyError as error:
        raise as_outcome_error(error) from error
    if len(codes) > MAX_MODIFIER_CODES:
        raise too_costly(
            f"{code}:{modifier}={value} stands for {len(codes)} codes: at most {MAX_MODIFIER_CODES}", [code]
        )
    _cache[key] = (codes, tuple((*k, v) for k, v in tenant.seen.items()))
    while len(_cache) > MAX_CACHED:
        _cache.popitem(last=False)
    return codes


async def _in(resolver: Layered, value: str) -> Codes:
    url, version = split_canonical(unescape(value), None)
    value_set = await require_value_set(resolver, url, version, "url")
    entries = await Expander(resolver, MAX_MODIFIER_CODES).expand(value_set)
    return tuple(e.key for e in entries)


async def _hierarchy(resolver: Layered, modifier: str, value: str) -> Codes:
    parts = [unescape(p) for p in split_pipe(value)]
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise OperationOutcomeError.of(400, "invalid", f":{modifier} takes system|code, not {value!r}")
    system, code = parts
    index = await require_code_system(resolver, system, None, "system")
    if index.get(code) is None:
        raise bad_request(f"{code} is not a code of {system}")
    related = index.ancestors(code) if modifier == "above" else set(index.descendants(code, MAX_MODIFIER_CODES))
    return tuple((system, c) for c in [code, *sorted(related)])


async def terminology_codes(
    repo: Repository, types: tuple[str, ...], params: list[tuple[str, str]]
) -> dict[tuple[str, str, str], Codes]:
    """The code list of each terminology modifier among ``params`` (on token parameters of ``types``)."""
    found: dict[tuple[str, str, str], Codes] = {}
    for name, value in params:
        code, _, modifier = name.partition(":")
        if modifier not in TERMINOLOGY_MODIFIERS or "." in name or not types:
            continue
        param = lookup(types[0], code)
        if param is None or param.type != "token":
            continue  # the parser reports it
        for alternative in split_or(value):
            found[(code, modifier, alternative)] = await _resolve(repo, modifier, alternative, code)
            total = sum(len(codes) for codes in found.values())
            if total > MAX_SEARCH_CODES:
                raise too_costly(
                    f"the terminology modifiers of this search stand for more than {MAX_SEARCH_CODES} codes"
                )
    return found
