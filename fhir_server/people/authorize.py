"""The authorization endpoint's checks and its codes, HTTP-free (RFC 6749 §4.1, RFC 7636, SMART App Launch
2.x app-launch.html#obtain-authorization-code).

Order matters (RFC 6749 §4.1.2.1): while the client or its redirect URI is not established, errors are
shown to the person and **never** redirected; afterwards they go back to the registered redirect URI with
``error`` and the ``state``. The redirect URI must equal a registered one exactly (RFC 9700 §4.1.3). PKCE
with ``S256`` is required of every client (SMART 2.x: "SHALL"; ``plain`` is refused). ``aud`` must be the
tenant's FHIR base. An EHR launch's ``launch`` must name a launch context the EHR created on this tenant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from fhir_server.people.tickets import Tickets
from fhir_server.people.user_grant import Granted, person_grant
from fhir_server.people.users import User
from fhir_server.security.clients import Client, ClientRegistry

CODE_SECONDS = 60
LAUNCH_SECONDS = 300
MAX_PARAMETER = 2000
CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{43}$")  # base64url of a SHA-256 digest, no padding


class AuthorizeError(Exception):
    """An authorization refusal; ``redirect`` is None when it must be shown, not redirected."""

    def __init__(self, error: str, description: str, redirect: str | None = None, state: str | None = None) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.redirect = redirect
        self.state = state

    def location(self) -> str:
        assert self.redirect is not None
        query = {"error": self.error, "error_description": self.description}
        return with_query(self.redirect, {**query, **({"state": self.state} if self.state is not None else {})})


def with_query(uri: str, params: dict[str, str]) -> str:
    return f"{uri}{'&' if '?' in uri else '?'}{urlencode(params)}"


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    client: Client
    redirect_uri: str
    state: str | None
    scope: str
    code_challenge: str
    nonce: str | None
    launch: str | None
    patient: str | None  # of the launch context

    def parameters(self) -> dict[str, str]:
        """The request again, for the consent form to post back."""
        params = {
            "response_type": "code",
            "client_id": self.client.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": self.scope,
            "code_challenge": self.code_challenge,
            "code_challenge_method": "S256",
        }
        optional = {"state": self.state, "nonce": self.nonce, "launch": self.launch}
        return params | {k: v for k, v in optional.items() if v is not None}

    def granted(self, user: User) -> Granted:
        return person_grant(self.scope, user.roles, self.client.roles, self.patient)


class Authorizer:
    def __init__(self, clients: ClientRegistry, launches: Tickets, codes: Tickets, public_url: str) -> None:
        self.clients = clients
        self.launches = launches
        self.codes = codes
        self.public_url = public_url.rstrip("/")

    async def check(self, params: dict[str, str]) -> AuthorizationRequest:
        if any(len(v) > MAX_PARAMETER for v in params.values()):
            raise AuthorizeError("invalid_request", "a parameter is too long")
        client = await self.clients.get(params.get("client_id", ""))
        if client is None or not client.active:
            raise AuthorizeError("invalid_request", "unknown or disabled client_id")
        redirect_uri = params.get("redirect_uri", "")
        if redirect_uri not in client.extra.get("redirect_uris", []):
            raise AuthorizeError("invalid_request", "redirect_uri is not one registered for this client")
        state = params.get("state")

        def refuse(error: str, description: str) -> AuthorizeError:
            return AuthorizeError(error, description, redirect_uri, state)

        if params.get("response_type") != "code":
            raise refuse("unsupported_response_type", "response_type must be code")
        if params.get("code_challenge_method") != "S256" or not CHALLENGE.match(params.get("code_challenge", "")):
            raise refuse("invalid_request", "PKCE is required: code_challenge with code_challenge_method S256")
        if params.get("aud", "").rstrip("/") != f"{self.public_url}/fhir/{client.tenant}":
            raise refuse(
                "invalid_request", f"aud must be this server's FHIR base {self.public_url}/fhir/{client.tenant}"
            )
        if not params.get("scope", "").strip():
            raise refuse("invalid_scope", "no scope was requested")
        launch, patient = params.get("launch"), None
        if launch is not None:
            context = await self.launches.read(launch)
            if context is None or context[0] != client.tenant:
                raise refuse("invalid_request", "the launch context is unknown or has expired")
            patient = context[1].get("patient")
        return AuthorizationRequest(
            client, redirect_uri, state, params["scope"], params["code_challenge"], params.get("nonce"), launch, patient
        )

    async def approve(self, request: AuthorizationRequest, user: User) -> str:
        """The redirect carrying a new code for ``user``'s grant (RFC 6749 §4.1.2)."""
        granted = request.granted(user)
        if not granted.resources and not granted.others:
            raise AuthorizeError(
                "invalid_scope",
                "none of the requested scopes can be granted to this user and app",
                request.redirect_uri,
                request.state,
            )
        body: dict[str, Any] = {
            "client_id": request.client.client_id,
            "redirect_uri": request.redirect_uri,
            "challenge": request.code_challenge,
            "username": user.username,
            "scope": granted.text,
            "patient": request.patient,
            "nonce": request.nonce,
        }
        code = await self.codes.issue(request.client.tenant, body, CODE_SECONDS)
        return with_query(request.redirect_uri, {"code": code, **_state(request)})

    @staticmethod
    def deny(request: AuthorizationRequest) -> str:
        query = {"error": "access_denied", "error_description": "the user did not allow the app"}
        return with_query(request.redirect_uri, {**query, **_state(request)})


def _state(request: AuthorizationRequest) -> dict[str, str]:
    return {"state": request.state} if request.state is not None else {}
