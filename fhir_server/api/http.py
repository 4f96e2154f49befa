"""The FastAPI adapter: HTTP in, FhirRequest to the router, FhirResponse out (http.html#mime-type).

Only JSON is served: ``_format``/``Accept`` asking for XML get 406, an XML body 415.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Annotated, Any
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

from fhir_server.api.binary import native_response, wants_native
from fhir_server.api.json_body import parse_json
from fhir_server.api.messages import FhirRequest, FhirResponse
from fhir_server.api.router import FhirRouter
from fhir_server.audit.audited_writes import AuditedWrites, written_resource
from fhir_server.audit.events import Requestor, patient_of, rest_event
from fhir_server.audit.trail import AuditTrail, reads_audit_events
from fhir_server.errors import OperationOutcomeError, bad_request, not_found, outcome
from fhir_server.repository import Repository
from fhir_server.security.bearer import Authenticator
from fhir_server.security.policy import AccessPolicy
from fhir_server.security.scopes import Access
from fhir_server.storage.port import Engine, ResourceVersion, TenantStore, TenantUnknownError

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
# application/json+fhir: the DSTU2 name, still sent by older clients (http.html#mime-type)
_JSON_TYPES = (
    "application/fhir+json",
    "application/json",
    "application/json+fhir",
    "application/json-patch+json",
    "application/merge-patch+json",
    "text/json",
)
_FORMS = "application/x-www-form-urlencoded"
_XML_FORMATS = ("xml", "text/xml", "application/xml", "application/fhir+xml")
_JSON_FORMATS = ("json", "application/json", "application/fhir+json", "application/json+fhir", "text/json")


class FhirHttp:
    """What the HTTP adapter needs: the engine, the router and the limits."""

    def __init__(
        self,
        engine: Engine,
        router: FhirRouter,
        *,
        max_body_bytes: int,
        default_count: int,
        max_count: int,
        audit: AuditTrail | None = None,
        authenticator: Authenticator | None = None,
    ) -> None:
        self.engine = engine
        self.router = router
        self.max_body_bytes = max_body_bytes
        self.default_count = default_count
        self.max_count = max_count
        self.audit = audit
        self.authenticator = authenticator or Authenticator(None)


async def get_fhir_http(request: Request) -> FhirHttp:  # async: a sync dependency costs a thread hop
    fhir_http: FhirHttp = request.app.state.fhir_http
    return fhir_http


FhirHttpDep = Annotated[FhirHttp, Depends(get_fhir_http)]


def render(response: FhirResponse, pretty: bool = False) -> Response:
    headers = dict(response.headers)
    if response.body is None:
        return Response(status_code=response.status, headers=headers)
    option = orjson.OPT_INDENT_2 if pretty else 0
    return Response(
        orjson.dumps(response.body, option=option),
        status_code=response.status,
        media_type=f"{FHIR_JSON}; charset=utf-8",
        headers=headers,
    )


def error_response(error: OperationOutcomeError, pretty: bool = False) -> Response:
    return render(FhirResponse(error.status, error.outcome, dict(error.headers)), pretty)


def _negotiate(request: Request, params: list[tuple[str, str]]) -> None:
    fmt = next((v for k, v in params if k == "_format"), None)
    if fmt is not None:
        base = fmt.split(";")[0].strip().lower()
        if base in _XML_FORMATS:
            raise OperationOutcomeError.of(406, "not-supported", "this server serves FHIR JSON only, not XML")
        if base not in _JSON_FORMATS:
            raise OperationOutcomeError.of(406, "not-supported", f"_format {fmt!r} is not supported: use json")
        return
    accept = request.headers.get("accept", "")
    if not accept:
        return
    kinds = [part.split(";")[0].strip().lower() for part in accept.split(",")]
    if any(k in _JSON_FORMATS or k in ("*/*", "application/*") or k.endswith("+json") for k in kinds):
        return
    raise OperationOutcomeError.of(
        406, "not-supported", f"cannot answer Accept: {accept}; this server serves FHIR JSON"
    )


async def _body(request: Request, limit: int) -> tuple[Any, list[tuple[str, str]]]:
    """The parsed JSON body (or form parameters of a POST _search)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise OperationOutcomeError.of(413, "too-costly", f"the body is larger than {limit} bytes")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise OperationOutcomeError.of(413, "too-costly", f"the body is larger than {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect as exc:  # e.g. closed by dermbridge/http_protocol.py when the body stalled
        raise bad_request("the client disconnected before the whole body arrived") from exc
    raw = b"".join(chunks)
    if not raw:
        return None, []
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == _FORMS:
        try:
            return None, parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError as exc:
            raise bad_request("the form body is not UTF-8") from exc
    if content_type and content_type not in _JSON_TYPES:
        raise OperationOutcomeError.of(
            415, "not-supported", f"Content-Type {content_type} is not supported: send {FHIR_JSON}"
        )
    return parse_json(raw), []


def _parse_query(request: Request) -> list[tuple[str, str]]:
    try:
        return parse_qsl(request.url.query, keep_blank_values=True, strict_parsing=False, errors="strict")
    except (UnicodeDecodeError, ValueError) as exc:
        raise bad_request(f"the query string cannot be decoded: {exc}") from exc


router = APIRouter()
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


@router.api_route("/fhir/{tenant}", methods=_METHODS, include_in_schema=False)
@router.api_route("/fhir/{tenant}/{path:path}", methods=_METHODS, include_in_schema=False)
async def fhir_endpoint(request: Request, tenant: str, fhir: FhirHttpDep, path: str = "") -> Response:
    pretty = request.query_params.get("_pretty") == "true"
    segments = [p for p in path.split("/") if p]
    access: Access | None = None
    refused: OperationOutcomeError | None = None
    try:  # before the tenant lookup: no token, no hint of which tenants exist
        if not fhir.router.is_public(request.method, segments):
            address = request.client.host if request.client else ""
            access = await fhir.authenticator.access(request.headers.get("authorization"), tenant, address)
    except OperationOutcomeError as error:
        refused = error
    try:
        store = await fhir.engine.tenant(tenant)
    except (TenantUnknownError, ValueError):
        return error_response(refused or not_found(f"unknown tenant {tenant!r}"), pretty)
    base_url = str(request.base_url).rstrip("/") + f"/fhir/{tenant}"
    who = Requestor(access.subject, access.fhir_user) if access is not None else Requestor(_unauthenticated(fhir))
    audited = AuditedWrites(store, fhir.audit) if fhir.audit is not None else None
    policy = _policy(fhir, access)
    repo = Repository(audited.store if audited is not None else store, policy, local_base=base_url,
                      default_count=fhir.default_count, max_count=fhir.max_count)  # fmt: skip
    params: list[tuple[str, str]] = []
    native = False
    try:
        if refused is not None:
            raise refused
        params = _parse_query(request)
        method = "GET" if request.method == "HEAD" else request.method
        native = wants_native(method, segments, params, request.headers.get("accept", ""))
        if not native:
            _negotiate(request, params)
        body, form = await _body(request, fhir.max_body_bytes)
        fhir_request = FhirRequest(
            method="GET" if request.method == "HEAD" else request.method,  # RFC 9110 9.3.2: HEAD is GET without body
            path=segments,
            params=params,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=form if form else body,
            base_url=base_url,
            access=access,
        )
        if audited is not None:  # a write commits with its AuditEvent
            audited.describe = partial(_write_event, audited.trail, request, segments, params, who)
        if fhir.audit is not None and reads_audit_events(segments, params):
            await fhir.audit.flush(store)
        response = await fhir.router.dispatch(repo, fhir_request)
    except OperationOutcomeError as error:
        response = FhirResponse(error.status, error.outcome, dict(error.headers))
    if fhir.audit is not None and not (audited is not None and audited.recorded):
        await _audit(fhir.audit, store, request, segments, params, response, who)
    rendered = (native_response(response) if native else None) or render(response, pretty)
    return head_response(rendered) if request.method == "HEAD" else rendered


def _policy(fhir: FhirHttp, access: Access | None) -> AccessPolicy:
    """The token's policy; with authentication turned off, the system context says so."""
    if access is not None:
        return AccessPolicy.of(access)
    if not fhir.authenticator.enabled:
        return AccessPolicy.system("authentication disabled (DERMBRIDGE_AUTH_ENABLED=false)")
    return AccessPolicy.nobody()  # the request is refused before it reaches the repository


def head_response(full: Response) -> Response:
    """The answer to HEAD: the GET answer's status and headers (Content-Length included), no body."""
    headers = {k: v for k, v in full.headers.items() if k.lower() != "content-length"}
    head = Response(status_code=full.status_code, headers=headers)
    head.headers["content-length"] = full.headers.get("content-length", "0")
    return head


def _unauthenticated(fhir: FhirHttp) -> str:
    return "(not authenticated)" if fhir.authenticator.enabled else "(authentication disabled)"


async def _audit(
    trail: AuditTrail,
    store: TenantStore,
    request: Request,
    segments: list[str],
    params: list[tuple[str, str]],
    response: FhirResponse,
    who: Requestor,
) -> None:
    """Record the interaction before answering: no answer leaves without its AuditEvent."""
    body = response.body
    entity = None
    if isinstance(body, dict) and body.get("resourceType") not in (None, "Bundle", "OperationOutcome"):
        if body.get("id"):
            entity = f"{body['resourceType']}/{body['id']}"
    elif len(segments) >= 2 and not segments[1].startswith(("$", "_")):
        entity = f"{segments[0]}/{segments[1]}"
    await trail.record(store, _event(trail, request, segments, params, who, response.status, entity, body))


def _write_event(
    trail: AuditTrail, request: Request, segments: list[str], params: list[tuple[str, str]], who: Requestor,
    first: ResourceVersion,
) -> dict[str, Any]:  # fmt: skip
    """The AuditEvent of an interaction whose first write is committing (``AuditedWrites``)."""
    if len(segments) >= 2 and not segments[1].startswith(("$", "_")):
        entity: str | None = f"{segments[0]}/{segments[1]}"
    else:
        entity = f"{first.resource_type}/{first.id}" if segments[:1] == [first.resource_type] else None
    return _event(trail, request, segments, params, who, 200, entity, written_resource(first))


def _event(
    trail: AuditTrail, request: Request, segments: list[str], params: list[tuple[str, str]], who: Requestor,
    status: int, entity: str | None, body: Any,
) -> dict[str, Any]:  # fmt: skip
    return rest_event(
        method=request.method,
        path=segments,
        params=params,
        status=status,
        who=who.client,
        address=request.client.host if request.client else None,
        entity=entity,
        patient=patient_of(segments, params, body),
        query_key=trail.signer.query_key,
        fhir_user=who.fhir_user,
    )


def unexpected_error_response() -> Response:
    return render(FhirResponse(500, outcome("fatal", "exception", "internal error: the server logged the details")))
