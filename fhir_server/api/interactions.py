"""The instance and type-level interactions (http.html#read ... http.html#delete) as route handlers.

Each handler adapts a ``FhirRequest`` to one repository call and its answer to a ``FhirResponse``;
access is the repository's business.
"""

from __future__ import annotations

from datetime import datetime
from email.utils import format_datetime
from urllib.parse import urlencode

from fhir_server.api.messages import FhirRequest, FhirResponse
from fhir_server.api.routes import PathArgs
from fhir_server.api.summary import apply_summary
from fhir_server.errors import bad_request, outcome
from fhir_server.repository import Repository, Stored


def last_modified(instant: str) -> str:
    return format_datetime(datetime.fromisoformat(instant), usegmt=True)


def elements(request: FhirRequest) -> list[str] | None:
    value = request.param("_elements")
    return [e.strip() for e in value.split(",") if e.strip()] if value else None


def prefer(request: FhirRequest, key: str) -> str | None:
    """One token of the ``Prefer`` header (RFC 7240), e.g. ``return`` or ``handling``."""
    for part in (request.header("prefer") or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name.strip() == key:
            return value.strip().strip('"')
    return None


def resource_response(status: int, stored: Stored, request: FhirRequest, *, location: bool = False) -> FhirResponse:
    headers = {"ETag": stored.etag, "Last-Modified": last_modified(stored.version.last_updated)}
    if location:
        headers["Location"] = (
            f"{request.base_url}/{stored.version.resource_type}/{stored.version.id}/_history/{stored.version.version}"
        )
    body = apply_summary(dict(stored.resource), request.param("_summary"), elements(request))
    return FhirResponse(status, body, headers)


def write_response(status: int, stored: Stored, request: FhirRequest) -> FhirResponse:
    """Honour ``Prefer: return=minimal|representation|OperationOutcome`` (http.html#ops); the outcome
    carries the write's warnings (binding checks) and information issues."""
    response = resource_response(status, stored, request, location=status == 201 or stored.created)
    response.warnings = tuple(i for i in stored.issues if i["severity"] == "warning")
    preference = prefer(request, "return")
    if preference == "minimal":
        response.body = None
    elif preference == "OperationOutcome":
        what = "created" if stored.created else "updated"
        response.body = outcome(
            "information", "informational", f"{stored.version.resource_type}/{stored.version.id} {what}"
        )
        response.body["issue"] += stored.issues
    return response


def _created_or_updated(stored: Stored, request: FhirRequest) -> FhirResponse:
    return write_response(201 if stored.created else 200, stored, request)


def _criteria(request: FhirRequest) -> str:
    params = [(k, v) for k, v in request.params if k not in ("_format", "_pretty")]
    if not params:
        raise bad_request("conditional update and delete need search criteria in the URL")
    return urlencode(params)


async def read(repo: Repository, request: FhirRequest, args: PathArgs) -> FhirResponse:
    """http.html#read, with ``If-None-Match`` (304)."""
    stored = await repo.read(args["type"], args["id"])
    response = resource_response(200, stored, request)
    if_none_match = request.header("if-none-match")
    if if_none_match and if_none_match.strip() == stored.etag:
        return FhirResponse(304, None, response.headers)
    return response


async def vread(repo: Repository, request: FhirRequest, args: PathArgs) -> FhirResponse:
    """http.html#vread"""
    return resource_response(200, await repo.vread(args["type"], args["id"], args["vid"]), request)


async def create(repo: Repository, request: FhirRequest, args: PathArgs) -> FhirResponse:
    """http.html#create and, with ``If-None-Exist``, http.html#ccreate."""
    stored = await repo.create(request.body, resource_type=args["type"], if_none_exist=request.header("if-none-exist"))
    return _created_or_updated(stored, request)


async def update(repo: Repository, request: FhirRequest, args: PathArgs) -> FhirResponse:
    """http.html#update"""
    stored = await repo.update(
        request.body, resource_type=args["type"], id=args["id"], if_match=request.header("if-match")
    )
    return _created_or_updated(stored, request)


async def conditional_update(repo: Repository, request: FhirRequest, args: PathArgs) -> FhirResponse:
    """http.html#cond-update"""
    stored = await repo.conditional_update(
        request.body, resource_type=args["type"], criteria=_criteria(request), if_match=request.header("if-match")
    )
    return _created_or_updated(stored, request)


async def patch(repo: Repository, request: FhirRequest, args: PathArgs) -> FhirResponse:
    """http.html#patch: a JSON Patch or a JSON merge patch, as the Content-Type says"""
    stored = await repo.patch(
        request.body,
        resource_type=args["type"],
        id=args["id"],
        if_match=request.header("if-match"),
        content_type=request.header("content-type"),
    )
    return write_response(200, stored, request)


async def delete(repo: Repository, request: FhirRequest, args: PathArgs) -> FhirResponse:
    """http.html#delete"""
    resource_type, id = args["type"], args["id"]
    version = await repo.delete(resource_type, id, if_match=request.header("if-match"))
    headers = {"ETag": f'W/"{version.version}"'} if version is not None else {}
    message = f"{resource_type}/{id} deleted" if version else f"{resource_type}/{id} was not present"
    return FhirResponse(200, outcome("information", "informational", message), headers)


async def conditional_delete(repo: Repository, request: FhirRequest, args: PathArgs) -> FhirResponse:
    """http.html#cdelete"""
    count = await repo.conditional_delete(args["type"], _criteria(request))
    return FhirResponse(200, outcome("information", "informational", f"deleted {count} {args['type']} resource(s)"))
