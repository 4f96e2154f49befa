"""The FHIR REST router: one FhirRequest in, one FhirResponse out (http.html).

The FastAPI adapter and the batch/transaction processor both dispatch through it, so an
interaction behaves the same on its own and inside a Bundle.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from email.utils import format_datetime
from typing import Any

from fhir_server.api.compartment import EVERYTHING_DEFINITION, compartment_clause, everything
from fhir_server.api.includes import resolve_includes
from fhir_server.api.links import entry, history_entry, now_instant, page_links
from fhir_server.api.messages import FhirRequest, FhirResponse
from fhir_server.api.summary import apply_summary
from fhir_server.definitions import resource_types
from fhir_server.errors import (
    bad_request,
    forbidden,
    method_not_allowed,
    not_found,
    not_supported,
    outcome,
)
from fhir_server.limits import whole_number
from fhir_server.repository import Repository, Stored, load
from fhir_server.search.extract import parse_local_reference
from fhir_server.search.request import SearchRequest
from fhir_server.search.values import date_range
from fhir_server.security.guard import allowed, in_compartment, readable, require
from fhir_server.security.scopes import Permission
from fhir_server.storage.port import HistoryQuery
from fhir_server.storage.query import Clause
from fhir_server.validation import check_type

OperationHandler = Callable[[Repository, FhirRequest, str | None, str | None], Awaitable[FhirResponse]]
CapabilityProvider = Callable[[str], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Operation:
    """A FHIR operation (``$name``) and the OperationDefinition that declares it."""

    name: str
    resource_types: tuple[str, ...]  # empty: system level
    instance: bool
    handler: OperationHandler
    definition: dict[str, Any]
    affects_state: bool = False
    permission: Permission = "r"  # what the token needs on the operation's resource type


def last_modified(instant: str) -> str:
    return format_datetime(datetime.fromisoformat(instant), usegmt=True)


def resource_response(status: int, stored: Stored, request: FhirRequest, *, location: bool = False) -> FhirResponse:
    headers = {"ETag": stored.etag, "Last-Modified": last_modified(stored.version.last_updated)}
    if location:
        headers["Location"] = (
            f"{request.base_url}/{stored.version.resource_type}/{stored.version.id}/_history/{stored.version.version}"
        )
    body = apply_summary(dict(stored.resource), request.param("_summary"), _elements(request))
    return FhirResponse(status, body, headers)


def _elements(request: FhirRequest) -> list[str] | None:
    value = request.param("_elements")
    return [e.strip() for e in value.split(",") if e.strip()] if value else None


def _prefer(request: FhirRequest, key: str) -> str | None:
    for part in (request.header("prefer") or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name.strip() == key:
            return value.strip().strip('"')
    return None


def write_response(status: int, stored: Stored, request: FhirRequest) -> FhirResponse:
    """Honour ``Prefer: return=minimal|representation|OperationOutcome`` (http.html#ops)."""
    response = resource_response(status, stored, request, location=status == 201 or stored.created)
    preference = _prefer(request, "return")
    if preference == "minimal":
        response.body = None
    elif preference == "OperationOutcome":
        what = "created" if stored.created else "updated"
        response.body = outcome(
            "information", "informational", f"{stored.version.resource_type}/{stored.version.id} {what}"
        )
    return response


class FhirRouter:
    def __init__(self, capability: CapabilityProvider) -> None:
        self._capability = capability
        self.operations: dict[str, Operation] = {}
        self.batch_handler: Callable[[Repository, FhirRequest], Awaitable[FhirResponse]] | None = None
        self.register(Operation("everything", ("Patient",), True, everything, EVERYTHING_DEFINITION, False))

    def register(self, operation: Operation) -> None:
        self.operations[operation.name] = operation

    async def dispatch(self, repo: Repository, request: FhirRequest) -> FhirResponse:
        path, method = request.path, request.method
        if not path:
            if method == "POST":
                if self.batch_handler is None:
                    raise method_not_allowed("batch and transaction are not available")
                return await self.batch_handler(repo, request)
            if method == "GET":
                return await self._search(repo, request, self._system_types(request))
            raise method_not_allowed(f"{method} is not allowed on the base URL")
        head = path[0]
        if head == "metadata" and len(path) == 1:
            return self._only(method, "GET") or FhirResponse(200, self._capability(request.base_url))
        if head == "_history" and len(path) == 1:
            return self._only(method, "GET") or await self._history(repo, request, None, None)
        if head == "_search" and len(path) == 1:
            return self._only(method, "POST") or await self._search(repo, request, self._system_types(request))
        if head.startswith("$"):
            return await self._operation(repo, request, head[1:], None, None)
        check_type(head)
        if len(path) == 1:
            return await self._type_level(repo, request, head)
        second = path[1]
        if second == "_search" and len(path) == 2:
            return self._only(method, "POST") or await self._search(repo, request, (head,))
        if second == "_history" and len(path) == 2:
            return self._only(method, "GET") or await self._history(repo, request, head, None)
        if second.startswith("$"):
            return await self._operation(repo, request, second[1:], head, None)
        if len(path) == 2:
            return await self._instance(repo, request, head, second)
        third = path[2]
        if third.startswith("$") and len(path) == 3:
            return await self._operation(repo, request, third[1:], head, second)
        if third == "_history" and len(path) == 3:
            return self._only(method, "GET") or await self._history(repo, request, head, second)
        if third == "_history" and len(path) == 4:
            if require(request.access, head, "r") == "patient":
                await _check_existing(repo, request, head, second)
            return self._only(method, "GET") or resource_response(200, await repo.vread(head, second, path[3]), request)
        if len(path) == 3 and head == "Patient":
            check_type(third)
            return self._only(method, "GET") or await self._compartment(repo, request, second, third)
        raise not_found(f"no FHIR endpoint at {'/'.join(path)}")

    @staticmethod
    def _only(method: str, allowed: str) -> FhirResponse | None:
        if method != allowed:
            raise method_not_allowed(f"{method} is not allowed here; use {allowed}")
        return None

    def _system_types(self, request: FhirRequest) -> tuple[str, ...]:
        names = request.param("_type")
        if not names:
            if [k for k, _ in request.params if not k.startswith("_")]:
                raise bad_request("a search on every type takes only common parameters: name the types in _type")
            return tuple(sorted(t for t in resource_types() if allowed(request.access, t, "s")))
        types = tuple(t.strip() for t in names.split(",") if t.strip())
        for resource_type in types:
            check_type(resource_type)
        return types

    # -- type and instance level ---------------------------------------------------------------
    async def _type_level(self, repo: Repository, request: FhirRequest, resource_type: str) -> FhirResponse:
        method = request.method
        if method == "GET":
            return await self._search(repo, request, (resource_type,))
        if method == "POST":
            if require(request.access, resource_type, "c") == "patient":
                _check_member(request, request.body)
            stored = await repo.create(
                request.body, resource_type=resource_type, if_none_exist=request.header("if-none-exist")
            )
            return write_response(201 if stored.created else 200, stored, request)
        criteria = _criteria(request)
        if method in ("PUT", "DELETE") and require(request.access, resource_type, _WRITES[method]) == "patient":
            raise forbidden("conditional update and delete need a user/ or system/ scope")
        if method == "PUT":
            stored = await repo.conditional_update(
                request.body, resource_type=resource_type, criteria=criteria, if_match=request.header("if-match")
            )
            return write_response(201 if stored.created else 200, stored, request)
        if method == "DELETE":
            count = await repo.conditional_delete(resource_type, criteria)
            message = f"deleted {count} {resource_type} resource(s)"
            return FhirResponse(200, outcome("information", "informational", message))
        raise method_not_allowed(f"{method} is not allowed on a resource type")

    async def _instance(self, repo: Repository, request: FhirRequest, resource_type: str, id: str) -> FhirResponse:
        method = request.method
        decision = require(request.access, resource_type, _WRITES.get(method, "r"))
        if decision == "patient":
            await _check_existing(repo, request, resource_type, id)
        if method == "GET":
            stored = await repo.read(resource_type, id)
            response = resource_response(200, stored, request)
            if_none_match = request.header("if-none-match")
            if if_none_match and if_none_match.strip() == stored.etag:
                return FhirResponse(304, None, response.headers)
            return response
        if method == "PUT":
            if decision == "patient":
                _check_member(request, request.body)
            stored = await repo.update(
                request.body, resource_type=resource_type, id=id, if_match=request.header("if-match")
            )
            return write_response(201 if stored.created else 200, stored, request)
        if method == "PATCH":
            if decision == "patient":
                raise forbidden("a patient/ scope cannot PATCH (the result's compartment is unknown): use PUT")
            stored = await repo.patch(
                request.body,
                resource_type=resource_type,
                id=id,
                if_match=request.header("if-match"),
                content_type=request.header("content-type"),
            )
            return write_response(200, stored, request)
        if method == "DELETE":
            version = await repo.delete(resource_type, id, if_match=request.header("if-match"))
            headers = {"ETag": f'W/"{version.version}"'} if version is not None else {}
            message = f"{resource_type}/{id} deleted" if version else f"{resource_type}/{id} was not present"
            return FhirResponse(200, outcome("information", "informational", message), headers)
        raise method_not_allowed(f"{method} is not allowed on a resource instance")

    # -- search and history ------------------------------------------------------------------
    def _search_params(self, request: FhirRequest) -> list[tuple[str, str]]:
        params = list(request.params)
        if request.method == "POST" and isinstance(request.body, list):
            params.extend(request.body)
        return [(k, v) for k, v in params if k not in ("_format", "_pretty")]

    async def _search(
        self, repo: Repository, request: FhirRequest, types: tuple[str, ...], extra: tuple[Clause, ...] = ()
    ) -> FhirResponse:
        lenient = _prefer(request, "handling") == "lenient"
        extra = extra + self._patient_bound(request, types)
        params = [(k, v) for k, v in self._search_params(request) if k != "_type" or len(types) == 1]
        search = repo.parse(types, params, lenient=lenient)
        if extra:
            search.query = replace(search.query, where=extra + search.query.where)
        page = await repo.search(search)
        matches = await repo.read_page(page)
        included = [s for s in await resolve_includes(repo, matches, search) if readable(request.access, s.resource)]
        bundle = self._bundle(request, search, matches, included, page.total)
        url = request.base_url + ("/" + "/".join(p for p in request.path if p != "_search") if request.path else "")
        echo = ([("_type", request.param("_type") or "")] if request.param("_type") else []) + search.echo
        bundle["link"] = page_links(
            url, echo, search.query.offset, search.query.count, page.total, len(matches), page.snapshot
        )
        return FhirResponse(200, bundle)

    @staticmethod
    def _patient_bound(request: FhirRequest, types: tuple[str, ...]) -> tuple[Clause, ...]:
        """The compartment clause a patient/ scope adds to a search (403 when no scope allows it)."""
        bound = [t for t in types if require(request.access, t, "s") == "patient"]
        if not bound:
            return ()
        assert request.access is not None and request.access.patient is not None
        clause = compartment_clause(bound[0], request.access.patient)
        if len(types) > 1 or clause is None:
            raise forbidden(f"a patient/ scope searches one type of the patient's compartment, not {', '.join(types)}")
        return (clause,)

    def _bundle(
        self,
        request: FhirRequest,
        search: SearchRequest,
        matches: list[Stored],
        included: list[Stored],
        total: int | None,
    ) -> dict[str, Any]:
        entries = [
            entry(request.base_url, s, "match", apply_summary(s.resource, search.summary, search.elements))
            for s in matches
        ]
        entries += [
            entry(request.base_url, s, "include", apply_summary(s.resource, search.summary, search.elements))
            for s in included
        ]
        if search.ignored:
            entries.append(
                {
                    "resource": outcome(
                        "warning",
                        "not-supported",
                        f"ignored unknown or unsupported parameters: {', '.join(search.ignored)}",
                    ),
                    "search": {"mode": "outcome"},
                }
            )
        bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "meta": {"lastUpdated": now_instant()}}
        if total is not None:
            bundle["total"] = total
        if search.summary != "count":
            bundle["entry"] = entries
        return bundle

    async def _history(
        self, repo: Repository, request: FhirRequest, resource_type: str | None, id: str | None
    ) -> FhirResponse:
        for checked in (resource_type,) if resource_type else tuple(sorted(resource_types())):
            if require(request.access, checked, "r") == "patient":
                if id is None:
                    raise forbidden("a patient/ scope reads the history of one resource, not of a type")
                await _check_existing(repo, request, checked, id)
        count = _int_param(request, "_count", repo.default_count, repo.max_count)
        offset = _int_param(request, "_offset", 0, 10**9)
        since = request.param("_since")
        if request.param("_at") is not None:
            raise not_supported("_at is not supported on history; use _since")
        if since is not None and (date_range(since) is None or "T" not in since):
            raise bad_request(f"_since must be a FHIR instant, not {since!r}", ["_since"])
        page = await repo.history(HistoryQuery(resource_type, id, since, None, count, offset))
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

    # -- compartment and operations ----------------------------------------------------------
    async def _compartment(
        self, repo: Repository, request: FhirRequest, patient_id: str, resource_type: str
    ) -> FhirResponse:
        """compartmentdefinition.html: ``Patient/[id]/[type]`` searches the type within the compartment."""
        access = request.access
        if access is not None and require(access, resource_type, "s") == "patient" and access.patient != patient_id:
            raise not_found(f"Patient/{patient_id} is not known")
        await repo.read("Patient", patient_id)
        clause = compartment_clause(resource_type, patient_id)
        if clause is None:
            raise bad_request(f"{resource_type} is not in the Patient compartment")
        return await self._search(repo, request, (resource_type,), (clause,))

    async def _operation(
        self, repo: Repository, request: FhirRequest, name: str, resource_type: str | None, id: str | None
    ) -> FhirResponse:
        operation = self.operations.get(name)
        if operation is None or (operation.resource_types and resource_type not in operation.resource_types):
            raise not_found(f"operation ${name} is not supported here")
        if operation.instance != (id is not None):
            raise not_found(f"operation ${name} is invoked on {'an instance' if operation.instance else 'a type'}")
        if request.method not in ("GET", "POST") or (operation.affects_state and request.method != "POST"):
            raise method_not_allowed(f"${name} is invoked with {'POST' if operation.affects_state else 'GET or POST'}")
        bounded = require(request.access, resource_type or "*", operation.permission) == "patient"
        if bounded and (resource_type, id) != ("Patient", request.access and request.access.patient):
            raise forbidden(f"${name} needs a user/ or system/ scope here")
        return await operation.handler(repo, request, resource_type, id)


_WRITES: dict[str, Permission] = {"POST": "c", "PUT": "u", "PATCH": "u", "DELETE": "d"}


def _check_member(request: FhirRequest, resource: object) -> None:
    """A patient/ scope writes only resources of its patient's compartment."""
    assert request.access is not None and request.access.patient is not None
    if not isinstance(resource, dict) or not in_compartment(resource, request.access.patient):
        raise forbidden("a patient/ scope writes only resources in its patient's compartment")


async def _check_existing(repo: Repository, request: FhirRequest, resource_type: str, id: str) -> None:
    """Under a patient/ scope, another patient's resource is answered as not found (no hint it exists)."""
    assert request.access is not None and request.access.patient is not None
    current = await repo.current(resource_type, id)
    if current is not None and not await _patients(repo, current, request.access.patient):
        raise not_found(f"{resource_type}/{id} is not known")


async def _patients(repo: Repository, resource: dict[str, Any], patient_id: str) -> bool:
    """In the patient's compartment; a Binary when the resource its securityContext names is (binary.html#security)."""
    if resource.get("resourceType") != "Binary":
        return in_compartment(resource, patient_id)
    context = resource.get("securityContext")
    reference = context.get("reference") if isinstance(context, dict) else None
    target = parse_local_reference(reference) if isinstance(reference, str) else None
    proxy = await repo.current(*target) if target is not None and target[0] != "Binary" else None
    return proxy is not None and in_compartment(proxy, patient_id)


def _criteria(request: FhirRequest) -> str:
    from urllib.parse import urlencode

    params = [(k, v) for k, v in request.params if k not in ("_format", "_pretty")]
    if not params:
        raise bad_request("conditional update and delete need search criteria in the URL")
    return urlencode(params)


def _int_param(request: FhirRequest, name: str, default: int, maximum: int) -> int:
    value = request.param(name)
    if value is None:
        return default
    number = whole_number(value, name)
    if number is None:
        raise bad_request(f"{name} must be a whole number", [name])
    return min(number, maximum)
