"""Search (search.html), compartment search (compartmentdefinition.html) and history
(http.html#history) as route handlers; the repository bounds each to what the caller may see."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fhir_server.api.compartment import compartment_clause
from fhir_server.api.includes import resolve_includes
from fhir_server.api.interactions import prefer
from fhir_server.api.links import entry, history_entry, now_instant, page_links
from fhir_server.api.messages import FhirRequest, FhirResponse
from fhir_server.api.routes import PathArgs
from fhir_server.api.summary import apply_summary
from fhir_server.definitions import resource_types
from fhir_server.errors import bad_request, not_supported, outcome
from fhir_server.limits import whole_number
from fhir_server.repository import Repository, Stored, load
from fhir_server.search.request import SearchRequest
from fhir_server.search.terminology_codes import terminology_codes
from fhir_server.search.values import date_range
from fhir_server.storage.port import HistoryQuery
from fhir_server.storage.query import Clause
from fhir_server.validation import check_type


async def search_type(repo: Repository, request: FhirRequest, args: PathArgs) -> FhirResponse:
    """search.html#search: ``GET [type]?...`` and ``POST [type]/_search``."""
    return await _search(repo, request, (args["type"],))


async def search_system(repo: Repository, request: FhirRequest, args: PathArgs) -> FhirResponse:
    """search.html#search at the base URL: the types named by ``_type``, else every type the caller may search."""
    names = request.param("_type")
    if not names:
        if [k for k, _ in request.params if not k.startswith("_")]:
            raise bad_request("a search on every type takes only common parameters: name the types in _type")
        return await _search(repo, request, repo.searchable(sorted(resource_types())))
    types = tuple(t.strip() for t in names.split(",") if t.strip())
    for resource_type in types:
        check_type(resource_type)
    return await _search(repo, request, types)


async def search_compartment(repo: Repository, request: FhirRequest, args: PathArgs) -> FhirResponse:
    """compartmentdefinition.html: ``Patient/[id]/[type]`` searches the type within the compartment."""
    patient_id, resource_type = args["id"], args["type"]
    check_type(resource_type)
    if repo.may("Patient", "r"):  # 404 for an unknown patient; without Patient scope, just no matches
        await repo.read("Patient", patient_id)
    clause = compartment_clause(resource_type, patient_id)
    if clause is None:
        raise bad_request(f"{resource_type} is not in the Patient compartment")
    return await _search(repo, request, (resource_type,), (clause,))


def _search_params(request: FhirRequest) -> list[tuple[str, str]]:
    params = list(request.params)
    if request.method == "POST" and isinstance(request.body, list):
        params.extend(request.body)
    return [(k, v) for k, v in params if k not in ("_format", "_pretty")]


async def _search(
    repo: Repository, request: FhirRequest, types: tuple[str, ...], extra: tuple[Clause, ...] = ()
) -> FhirResponse:
    lenient = prefer(request, "handling") == "lenient"
    params = [(k, v) for k, v in _search_params(request) if k != "_type" or len(types) == 1]
    codes = await terminology_codes(repo, types, params)
    search = repo.parse(types, params, lenient=lenient, codes=codes)
    if extra:
        search.query = replace(search.query, where=extra + search.query.where)
    page = await repo.search(search)
    matches = await repo.read_page(page)
    included = await resolve_includes(repo, matches, search)
    bundle = _bundle(request, search, matches, included, page.total)
    url = request.base_url + ("/" + "/".join(p for p in request.path if p != "_search") if request.path else "")
    echo = ([("_type", request.param("_type") or "")] if request.param("_type") else []) + search.echo
    bundle["link"] = page_links(
        url, echo, search.query.offset, search.query.count, page.total, len(matches), page.snapshot
    )
    return FhirResponse(200, bundle)


def _bundle(
    request: FhirRequest, search: SearchRequest, matches: list[Stored], included: list[Stored], total: int | None
) -> dict[str, Any]:
    entries = [
        entry(request.base_url, s, mode, apply_summary(s.resource, search.summary, search.elements))
        for mode, group in (("match", matches), ("include", included))
        for s in group
    ]
    if search.ignored:
        ignored = f"ignored unknown or unsupported parameters: {', '.join(search.ignored)}"
        entries.append({"resource": outcome("warning", "not-supported", ignored), "search": {"mode": "outcome"}})
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "meta": {"lastUpdated": now_instant()}}
    if total is not None:
        bundle["total"] = total
    if search.summary != "count":
        bundle["entry"] = entries
    return bundle


async def history(repo: Repository, request: FhirRequest, args: PathArgs) -> FhirResponse:
    """http.html#history at system (``_history``), type and instance level."""
    count = _int_param(request, "_count", repo.default_count, repo.max_count)
    offset = _int_param(request, "_offset", 0, 10**9)
    since = request.param("_since")
    if request.param("_at") is not None:
        raise not_supported("_at is not supported on history; use _since")
    if since is not None and (date_range(since) is None or "T" not in since):
        raise bad_request(f"_since must be a FHIR instant, not {since!r}", ["_since"])
    page = await repo.history(HistoryQuery(args.get("type"), args.get("id"), since, None, count, offset))
    entries = [history_entry(request.base_url, v, None if v.deleted else load(v)) for v in page.versions]
    url = request.base_url + "/" + "/".join(request.path)
    echo = [(k, v) for k, v in request.params if k == "_since"]
    bundle = {
        "resourceType": "Bundle",
        "type": "history",
        "total": page.total,
        "link": page_links(url, echo, offset, count, page.total, len(page.versions), None),
        "entry": entries,
    }
    return FhirResponse(200, bundle)


def _int_param(request: FhirRequest, name: str, default: int, maximum: int) -> int:
    value = request.param(name)
    if value is None:
        return default
    number = whole_number(value, name)
    if number is None:
        raise bad_request(f"{name} must be a whole number", [name])
    return min(number, maximum)
