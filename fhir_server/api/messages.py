"""The HTTP-free request and response that the FHIR router works on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fhir_server.security.scopes import Access


@dataclass(slots=True)
class FhirRequest:
    method: str
    path: list[str]  # segments after the tenant base, e.g. ["Patient", "123", "_history", "2"]
    params: list[tuple[str, str]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    body: Any = None
    base_url: str = ""  # e.g. http://127.0.0.1:8080/fhir/default
    access: Access | None = None  # None: a trusted in-process caller, not bound by scopes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def param(self, name: str) -> str | None:
        for key, value in self.params:
            if key == name:
                return value
        return None


@dataclass(slots=True)
class FhirResponse:
    status: int
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    warnings: tuple[dict[str, Any], ...] = ()  # of a write whose body is the resource: a bundle entry's outcome
