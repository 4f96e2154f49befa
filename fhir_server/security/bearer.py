"""Bearer tokens on requests (RFC 6750): from the Authorization header to an :class:`Access`."""

from __future__ import annotations

import logging

from fhir_server.errors import not_found, unauthorized
from fhir_server.security.scopes import Access
from fhir_server.security.tokens import TokenRejected, TokenService, WrongTenant

log = logging.getLogger(__name__)


class Authenticator:
    """Checks bearer tokens; with ``tokens=None`` (the explicit insecure development mode) every
    request is let through unrestricted."""

    def __init__(self, tokens: TokenService | None) -> None:
        self.tokens = tokens

    @property
    def enabled(self) -> bool:
        return self.tokens is not None

    def access(self, authorization: str | None, tenant: str) -> Access | None:
        """The caller's Access on ``tenant``: 401 without a usable token, 404 for another tenant's."""
        if self.tokens is None:
            return None
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorized("this endpoint needs a bearer access token (see /.well-known/smart-configuration)", "")
        try:
            return self.tokens.verify(token.strip(), tenant)
        except TokenRejected as exc:
            raise unauthorized(str(exc)) from exc
        except WrongTenant as exc:
            raise not_found(f"unknown tenant {tenant!r}") from exc
