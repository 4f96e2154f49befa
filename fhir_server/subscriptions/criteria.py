"""Subscription.criteria as a search URL (subscription.html#criteria: "Observation?code=...")."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl

from fhir_server.errors import OperationOutcomeError, unprocessable
from fhir_server.repository import Repository, Stored

MAX_CRITERIA = 2048


@dataclass(frozen=True, slots=True)
class Criteria:
    resource_type: str
    params: tuple[tuple[str, str], ...]


def parse_criteria(text: object) -> Criteria:
    """``Type?name=value&...`` (or a bare ``Type``); 422 otherwise."""
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_CRITERIA:
        raise unprocessable(
            f"criteria must be a search URL such as Observation?status=final, at most {MAX_CRITERIA} characters",
            ["Subscription.criteria"],
        )
    resource_type, _, query = text.strip().partition("?")
    params = tuple(parse_qsl(query, keep_blank_values=True))
    return Criteria(resource_type, params)


def check_criteria(repo: Repository, criteria: Criteria) -> None:
    """The criteria are a search the writer may run (400 unknown parameter, 403 not in its scopes)."""
    request = repo.parse((criteria.resource_type,), list(criteria.params))
    repo.policy.bound(request.query)


async def match(repo: Repository, criteria: Criteria, id: str, version: int | None = None) -> Stored | None:
    """The resource ``id`` when it matches the criteria as ``repo``'s caller may see it
    (the real search engine, with ``_id`` added), else None.

    ``version`` is the version the change event is about: search sees only the current version, so when
    the resource has changed since, None; the later change's own event is matched instead, and a version
    is never notified twice (nor an event's notification sent with another version's content)."""
    try:
        found = await repo.find(criteria.resource_type, [*criteria.params, ("_id", id)], 1)
    except OperationOutcomeError:  # the owner's scopes no longer allow the search: nothing matches
        return None
    if not found or (version is not None and found[0].version.version != version):
        return None
    return found[0]
