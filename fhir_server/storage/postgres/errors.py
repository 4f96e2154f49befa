"""What a client is told when PostgreSQL refuses a statement (http.html#summary): never a 500 for its values.

By SQLSTATE class (PostgreSQL "Appendix A. Error Codes"): 22 (data exception: a value PostgreSQL cannot
store or compare, such as a NUL character in text) and 54 (program limit exceeded: a row or value past a
limit) come from the request's content, so 4xx; 08 (connection), 53 (insufficient resources) and 57
(operator intervention: shutdown, failover) are outages, so 503 to retry. Any other class stays a server
error. Diagnostics name the class only: the server's message may quote the refused value.
"""

from __future__ import annotations

import asyncpg

from fhir_server.errors import OperationOutcomeError

_CLIENT = {
    "22": (400, "value", "the database cannot store or compare a value of this request"),
    "54": (422, "too-long", "a value of this request is past a limit of the database"),
}
_OUTAGE = ("08", "53", "57")


def outcome_for(exc: asyncpg.PostgresError) -> OperationOutcomeError | None:
    """The OperationOutcome for a refused statement, or None (a server error)."""
    state = exc.sqlstate or ""
    known = _CLIENT.get(state[:2])
    if known is not None:
        status, code, text = known
        return OperationOutcomeError.of(status, code, f"{text} (SQLSTATE {state})")
    if state[:2] in _OUTAGE:
        return OperationOutcomeError(
            503,
            {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "transient",
              "diagnostics": f"the database is unavailable (SQLSTATE {state}): retry later"}]},
            {"Retry-After": "5"},
        )  # fmt: skip
    return None
