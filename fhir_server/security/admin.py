"""Tenant configuration (issuer mapping, AI purposes of use) is an administrator's act: it needs a
``system/*`` scope that may update every type (SMART v2 scopes; the admin and integration roles),
so a user or patient token, however broad, does not configure the tenant."""

from __future__ import annotations

from fhir_server.errors import forbidden
from fhir_server.security.scopes import Access


def require_admin(access: Access | None, what: str) -> None:
    """403 unless ``access`` (None: a trusted in-process caller) holds ``system/*.u``."""
    if access is None:
        return
    if not any(s.context == "system" and s.resource_type == "*" and "u" in s.permissions for s in access.scopes):
        raise forbidden(f"{what} needs a system/*.u (admin) scope")
