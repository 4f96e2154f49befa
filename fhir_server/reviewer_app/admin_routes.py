"""The admin pages at ``/app/admin/`` (the ``admin`` role only: ``administrator``): workflow definitions
(list, view, publish a new version), OAuth clients (list, register, disable: the client registry the
``dermbridge client`` CLI uses), DICOM AE titles and C-MOVE destinations (``fhir_server.dicom_peers``: read by
the DIMSE listener on each association, no restart), and the audit trail with its ``audit verify`` status.
Every change is a form post with the session's CSRF token and writes an AuditEvent naming the administrator."""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from fhir_server import dicom_peers
from fhir_server.api.json_body import parse_json
from fhir_server.audit.verify import verify_summary
from fhir_server.errors import OperationOutcomeError
from fhir_server.people.signed_in import fhir_as
from fhir_server.reviewer_app.administrator import Administrator, SignedInAdministrator, record_change
from fhir_server.reviewer_app.posted import posted_form
from fhir_server.reviewer_app.rendering import page, problem
from fhir_server.security.clients import ClientError, ClientRegistry
from fhir_server.security.scopes import ROLES
from fhir_server.tenant_settings import SECURITY_CONFIGURATION, SOFTWARE_CONFIGURATION
from fhir_server.workflow.library import SHIPPED
from fhir_server.workflow.lifecycle import is_workflow_definition

router = APIRouter(prefix="/app/admin", include_in_schema=False)
AUDIT_PAGE = 50
MAX_DEFINITION = 60_000  # characters of a definition's JSON posted to publish it (under the form's 64 KiB)
ID_LENGTH = 64


def _user(me: Administrator) -> dict[str, Any]:
    return {"username": me.username, "fhir_user": me.fhir_user, "csrf": me.csrf, "admin": True}


async def _fhir(request: Request, me: Administrator, method: str, path: list[str], params: Any = None,
                body: Any = None) -> tuple[int, Any]:  # fmt: skip
    answer = await fhir_as(request, me, method, path, params, body)
    if answer.status >= 400:
        issues = (answer.body or {}).get("issue") or [{}]
        return answer.status, str(issues[0].get("diagnostics") or issues[0].get("code") or "refused")
    return answer.status, answer.body or {}


@router.get("/")
async def home(me: SignedInAdministrator) -> Response:
    return page("admin_home.html", user=_user(me))


# Workflow definitions (fhir_server.workflow.lifecycle: draft -> $activate -> active; a new version is a new
# resource with the same url)


@router.get("/workflows")
async def workflows(request: Request, me: SignedInAdministrator, message: str = "") -> Response:
    status, bundle = await _fhir(request, me, "GET", ["PlanDefinition"], [("_sort", "-_lastUpdated"),
                                                                           ("_count", "200")])  # fmt: skip
    if status >= 400:
        return problem("Workflow definitions", bundle, status, user=_user(me))
    found = [e["resource"] for e in bundle.get("entry") or [] if is_workflow_definition(e.get("resource"))]
    return page("admin_workflows.html", user=_user(me), definitions=found, shipped=SHIPPED, message=message[:200])


@router.get("/workflows/{definition_id}")
async def workflow(request: Request, me: SignedInAdministrator, definition_id: str) -> Response:
    status, found = await _fhir(request, me, "GET", ["PlanDefinition", definition_id[:ID_LENGTH]])
    if status >= 400 or not is_workflow_definition(found):
        return problem("Workflow definition", found if status >= 400 else "not a workflow definition",
                       status if status >= 400 else 404, user=_user(me))  # fmt: skip
    following = {k: v for k, v in found.items() if k not in ("id", "meta", "date", "text")}
    following.update(status="draft", version=_next_version(str(found.get("version") or "")))
    return page("admin_workflow.html", user=_user(me), definition=found, text=json.dumps(found, indent=2),
                draft=json.dumps(following, indent=2), message="")  # fmt: skip


def _next_version(version: str) -> str:
    """The version after ``version`` when its last part is a plain number (``1.2`` -> ``1.3``), else empty."""
    head, dot, last = version.rpartition(".")
    if not re.fullmatch(r"[0-9]{1,9}", last):
        return ""
    return f"{head}{dot}{int(last) + 1}"


@router.post("/workflows/publish")
async def publish(request: Request, me: SignedInAdministrator) -> Response:
    """A new version: the posted definition is created as a draft, then ``$activate`` publishes it (the product's
    previous active version is retired in the same transaction)."""
    form = await posted_form(request, me, whole=("definition",))
    if not isinstance(form, dict):
        return form
    text = form.get("definition", "")
    try:
        body = parse_json(text.encode()) if len(text) <= MAX_DEFINITION else None
    except OperationOutcomeError as error:
        said = error.outcome["issue"][0].get("diagnostics", "")
        return problem("Not published", f"the definition is not JSON: {said}", 422, user=_user(me))
    if not isinstance(body, dict):
        return problem("Not published", f"send one PlanDefinition of at most {MAX_DEFINITION} characters", 422,
                       user=_user(me))  # fmt: skip
    body.pop("id", None)
    body.update(resourceType="PlanDefinition", status="draft")
    status, created = await _fhir(request, me, "POST", ["PlanDefinition"], body=body)
    if status >= 400:
        return problem("Not published", created, status, user=_user(me))
    new = f"PlanDefinition/{created['id']}"
    status, active = await _fhir(request, me, "POST", ["PlanDefinition", created["id"], "$activate"],
                                 body={"resourceType": "Parameters"})  # fmt: skip
    if status >= 400:
        return problem("Not published", f"{new} was stored as a draft but not published: {active}", status,
                       user=_user(me))  # fmt: skip
    said = f"published {new} ({body.get('url')}|{body.get('version')})"
    await record_change(request, me, "workflow", SOFTWARE_CONFIGURATION, said)
    return RedirectResponse(f"/app/admin/workflows/{created['id']}", 303)


# OAuth clients (fhir_server.security.clients: the registry `dermbridge client` uses)


def _registry(request: Request) -> ClientRegistry:
    return request.app.state.clients


@router.get("/clients")
async def clients(request: Request, me: SignedInAdministrator) -> Response:
    listed = sorted(await _registry(request).list(me.tenant), key=lambda c: c.created, reverse=True)
    return page("admin_clients.html", user=_user(me), clients=listed, roles=sorted(ROLES), created=None,
                message="")  # fmt: skip


@router.post("/clients")
async def register_client(request: Request, me: SignedInAdministrator) -> Response:
    form = await posted_form(request, me)
    if not isinstance(form, dict):
        return form
    role, uri = form.get("role", ""), form.get("redirect_uri", "").strip()
    registry = _registry(request)
    try:
        if role not in ROLES:
            raise ClientError("choose one of the roles")
        client, secret = await registry.create(me.tenant, form.get("name", "").strip()[:200], [role],
                                               redirect_uris=[uri] if uri else None)  # fmt: skip
    except ClientError as error:
        listed = await registry.list(me.tenant)
        return page("admin_clients.html", 422, user=_user(me), clients=listed, roles=sorted(ROLES), created=None,
                    message=f"Not registered: {error}")  # fmt: skip
    await record_change(request, me, "oauth-clients", SECURITY_CONFIGURATION,
                        f"registered {client.client_id} ({client.name}, role {role})")  # fmt: skip
    listed = await registry.list(me.tenant)
    return page("admin_clients.html", user=_user(me), clients=listed, roles=sorted(ROLES),
                created={"client_id": client.client_id, "secret": secret}, message="")  # fmt: skip


@router.post("/clients/{client_id}/{action}")
async def change_client(request: Request, me: SignedInAdministrator, client_id: str, action: str) -> Response:
    form = await posted_form(request, me)
    if not isinstance(form, dict):
        return form
    registry = _registry(request)
    found = await registry.get(client_id[:200])
    if found is None or found.tenant != me.tenant or action not in ("disable", "enable"):
        return problem("Not found", "no such client or action in this organisation", 404, user=_user(me))
    changed = await registry.set_active(found.client_id, action == "enable")
    await record_change(request, me, "oauth-clients", SECURITY_CONFIGURATION, f"{action}d {changed.client_id}")
    return RedirectResponse("/app/admin/clients", 303)


# DICOM peers (fhir_server.dicom_peers: the calling AE titles of this tenant and its C-MOVE destinations)


@router.get("/dicom")
async def dicom(request: Request, me: SignedInAdministrator) -> Response:
    return await _dicom_page(request, me, "", 200)


async def _dicom_page(request: Request, me: Administrator, message: str, status: int) -> Response:
    store = await request.app.state.engine.tenant(me.tenant)
    peers = await dicom_peers.read(store)
    return page("admin_dicom.html", status, user=_user(me), peers=peers, services=dicom_peers.SERVICES,
                message=message)  # fmt: skip


@router.post("/dicom/{kind}/{action}")
async def change_dicom(request: Request, me: SignedInAdministrator, kind: str, action: str) -> Response:
    form = await posted_form(request, me)
    if not isinstance(form, dict):
        return form
    engine = request.app.state.engine
    store = await engine.tenant(me.tenant)
    try:
        said = await dicom_peers.change(
            store, kind, action, form, await dicom_peers.callers_elsewhere(engine, me.tenant)
        )
    except dicom_peers.PeerError as error:
        return await _dicom_page(request, me, f"Not changed: {error}", 422)
    await record_change(request, me, "dicom-peers", SECURITY_CONFIGURATION, said)
    return RedirectResponse("/app/admin/dicom", 303)


# The audit trail (AuditEvent search, newest first; `dermbridge audit verify`'s check and words)


@router.get("/audit")
async def audit(request: Request, me: SignedInAdministrator, type: str = "", since: str = "", before: str = "",
                check: str = "") -> Response:  # fmt: skip
    params = [("_sort", "-date"), ("_count", str(AUDIT_PAGE))]
    chosen = {"type": type[:64], "since": since[:32], "before": before[:32]}
    params += [("type", chosen["type"])] if chosen["type"] else []
    params += [("date", f"ge{chosen['since']}")] if chosen["since"] else []
    params += [("date", f"lt{chosen['before']}")] if chosen["before"] else []
    status, bundle = await _fhir(request, me, "GET", ["AuditEvent"], params)
    if status >= 400:
        return problem("Audit trail", bundle, status, user=_user(me))
    events = [e["resource"] for e in bundle.get("entry") or [] if (e.get("search") or {}).get("mode") != "outcome"]
    older = str(events[-1].get("recorded") or "") if len(events) == AUDIT_PAGE else ""
    verified = ""
    fhir = request.app.state.fhir_http
    if check and fhir.audit is not None:
        verified = verify_summary(me.tenant, await fhir.audit.verify(await fhir.engine.tenant(me.tenant)))
    return page("admin_audit.html", user=_user(me), events=events, chosen=chosen, older=older, verified=verified)
