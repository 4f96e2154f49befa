"""One error type for everything a FHIR client can get wrong (http.html#summary, operationoutcome.html)."""

from __future__ import annotations

from typing import Any

Outcome = dict[str, Any]


def outcome(severity: str, code: str, diagnostics: str, expression: list[str] | None = None) -> Outcome:
    """A one-issue OperationOutcome."""
    issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if expression:
        issue["expression"] = expression
    return {"resourceType": "OperationOutcome", "issue": [issue]}


class OperationOutcomeError(Exception):
    """A failed interaction: the HTTP status and the OperationOutcome that explains it."""

    def __init__(self, status: int, body: Outcome, headers: dict[str, str] | None = None) -> None:
        super().__init__(_first_diagnostics(body))
        self.status = status
        self.outcome = body
        self.headers = headers or {}

    @classmethod
    def of(cls, status: int, code: str, diagnostics: str, expression: list[str] | None = None) -> OperationOutcomeError:
        return cls(status, outcome("error", code, diagnostics, expression))


def _first_diagnostics(body: Outcome) -> str:
    issues = body.get("issue") or [{}]
    return str(issues[0].get("diagnostics", ""))


def bad_request(diagnostics: str, expression: list[str] | None = None) -> OperationOutcomeError:
    return OperationOutcomeError.of(400, "invalid", diagnostics, expression)


def not_supported(diagnostics: str) -> OperationOutcomeError:
    return OperationOutcomeError.of(400, "not-supported", diagnostics)


def not_found(diagnostics: str) -> OperationOutcomeError:
    return OperationOutcomeError.of(404, "not-found", diagnostics)


def gone(diagnostics: str) -> OperationOutcomeError:
    return OperationOutcomeError.of(410, "deleted", diagnostics)


def conflict(diagnostics: str) -> OperationOutcomeError:
    return OperationOutcomeError.of(409, "conflict", diagnostics)


def precondition_failed(diagnostics: str) -> OperationOutcomeError:
    return OperationOutcomeError.of(412, "conflict", diagnostics)


def unprocessable(diagnostics: str, expression: list[str] | None = None) -> OperationOutcomeError:
    return OperationOutcomeError.of(422, "processing", diagnostics, expression)


def method_not_allowed(diagnostics: str) -> OperationOutcomeError:
    return OperationOutcomeError.of(405, "not-supported", diagnostics)


def too_costly(diagnostics: str, expression: list[str] | None = None) -> OperationOutcomeError:
    return OperationOutcomeError.of(400, "too-costly", diagnostics, expression)


def forbidden(diagnostics: str) -> OperationOutcomeError:
    return OperationOutcomeError.of(403, "forbidden", diagnostics)


def unauthorized(diagnostics: str, error: str = "invalid_token") -> OperationOutcomeError:
    """401 with the RFC 6750 challenge."""
    header = f'Bearer realm="dermbridge", error="{error}"' if error else 'Bearer realm="dermbridge"'
    return OperationOutcomeError(401, outcome("error", "login", diagnostics), {"WWW-Authenticate": header})
