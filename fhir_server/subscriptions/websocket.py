"""The Subscription websocket endpoint, ``/fhir/{tenant}/$subscription-websocket`` (R4 subscription.html,
channel "websocket"; advertised in the CapabilityStatement with the ``capabilitystatement-websocket`` extension).

Security lives here, at the upgrade: the request carries ``Authorization: Bearer <access token>``
(the same tokens and checks as every FHIR request, ``Authenticator``); without a usable token, or with
another tenant's, the upgrade is refused with the HTTP status and an OperationOutcome (401, 404), as is
a client already holding ``sockets_per_client`` sockets here (429). Tokens never go in the URL (it is
logged by proxies). What a socket may then bind, and for how long, is ``sockets.Session``'s.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from fhir_server.api.http import error_response
from fhir_server.errors import OperationOutcomeError, not_found
from fhir_server.security.bearer import Authenticator
from fhir_server.storage.port import Engine, TenantStore, TenantUnknownError
from fhir_server.subscriptions.sockets import POLICY_VIOLATION, Caller, Session, SocketHub

log = logging.getLogger(__name__)
PATH = "/fhir/{tenant}/$subscription-websocket"
INTERNAL_ERROR = 1011  # RFC 6455 section 7.4.1

router = APIRouter()


def websocket_url(base_url: str) -> str:
    """The socket's URL for a tenant's FHIR base ``http(s)://host/fhir/{tenant}``: ``ws(s)://.../$subscription-websocket``."""
    scheme, _, rest = base_url.rstrip("/").partition("://")
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/$subscription-websocket"


@router.websocket(PATH)
async def subscription_websocket(websocket: WebSocket, tenant: str) -> None:
    hub: SocketHub = websocket.app.state.sockets
    try:
        caller = await _caller(websocket, tenant)
        store = await _store(websocket.app.state.engine, tenant)
        hub.check_room(caller)
    except OperationOutcomeError as exc:
        await _deny(websocket, exc)
        return
    with hub.admitted(caller) as wake:  # no await since check_room: the count cannot have moved
        await _serve(Session(hub, websocket, store, caller), wake)


async def _serve(session: Session, wake: asyncio.Event) -> None:
    websocket = session.websocket
    try:
        await websocket.accept()
        await session.run(wake)
    except WebSocketDisconnect:
        pass
    except Exception:  # a fault of ours ends this socket only
        log.exception("subscription websocket of %s failed", session.caller.label)
        if websocket.application_state == WebSocketState.CONNECTED:
            await websocket.close(INTERNAL_ERROR, "internal error")


async def _caller(websocket: WebSocket, tenant: str) -> Caller:
    authenticator: Authenticator = websocket.app.state.fhir_http.authenticator
    authorization = websocket.headers.get("authorization")
    access = await authenticator.access(authorization, tenant)
    expires = authenticator.expires(authorization, tenant)
    peer = f"{websocket.client.host}:{websocket.client.port}" if websocket.client else "unknown"
    return Caller(access, expires, peer)


async def _store(engine: Engine, tenant: str) -> TenantStore:
    try:
        return await engine.tenant(tenant)
    except (TenantUnknownError, ValueError) as exc:
        raise not_found(f"unknown tenant {tenant!r}") from exc


async def _deny(websocket: WebSocket, error: OperationOutcomeError) -> None:
    """The upgrade refused with the HTTP status and OperationOutcome (ASGI websocket denial response)."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(error_response(error))
    else:
        await websocket.close(POLICY_VIOLATION, str(error)[:120])
