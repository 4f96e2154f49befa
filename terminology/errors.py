"""The one error type of the terminology package, turned into an OperationOutcome at the FHIR edge
(terminology-service.html: an unknown code system or value set is an error, an invalid code is not)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TerminologyError(Exception):
    """``status`` is the HTTP status the FHIR edge answers with, ``code`` the OperationOutcome issue type."""

    status: int
    code: str
    message: str
    expression: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return self.message


def unknown(what: str, expression: str) -> TerminologyError:
    """A code system, value set or concept map the server does not know: 404 ``not-found``."""
    return TerminologyError(404, "not-found", f"{what} is not known to this server", [expression])


def invalid(message: str, expression: str | None = None) -> TerminologyError:
    return TerminologyError(400, "invalid", message, [expression] if expression else [])


def not_supported(message: str, expression: str | None = None) -> TerminologyError:
    return TerminologyError(400, "not-supported", message, [expression] if expression else [])


def too_costly(message: str, expression: str | None = None) -> TerminologyError:
    return TerminologyError(400, "too-costly", message, [expression] if expression else [])
