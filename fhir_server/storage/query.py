"""The engine-neutral search query: what to match, in terms of the typed index rows.

A query is an AND of clauses; a clause is an OR of matches on one search parameter.
Engines translate it: SQL subqueries over index tables (SQLite, PostgreSQL), or a document store's filters.
Dates, numbers and quantities are ranges [low, high) compared with the prefix semantics of
search.html#prefix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Prefix = Literal["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"]
RangeKind = Literal["date", "number", "quantity"]
StringMode = Literal["start", "exact", "contains"]
UriMode = Literal["exact", "above", "below"]
TotalMode = Literal["none", "estimate", "accurate"]


@dataclass(frozen=True, slots=True)
class TokenMatch:
    """system None: any system; system "": no system. code None: any code in the system."""

    system: str | None
    code: str | None


@dataclass(frozen=True, slots=True)
class TokenSetMatch:
    """Any of the (system, code) pairs: the codes a terminology gave for ``:in``, ``:above``, ``:below``."""

    codes: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class TokenTextMatch:
    text: str  # normalized; matches the start of any word of the display/text


@dataclass(frozen=True, slots=True)
class StringMatch:
    value: str  # normalized for start/contains, as given for exact
    mode: StringMode = "start"


@dataclass(frozen=True, slots=True)
class RangeMatch:
    """The search value as the range [low, high) of its precision, and as the exact ``value``.

    Dates compare ranges with ranges (search.html#date); numbers and quantities use the
    precision range for eq/ne/ap and the exact value for the other prefixes (search.html#number).
    """

    prefix: Prefix
    low: float
    high: float
    value: float = 0.0
    system: str | None = None  # quantities only
    code: str | None = None


@dataclass(frozen=True, slots=True)
class ReferenceMatch:
    """A local target (type may be None: any allowed type), or a url (absolute, canonical, identifier)."""

    target_type: str | None = None
    target_id: str | None = None
    url: str | None = None


@dataclass(frozen=True, slots=True)
class UriMatch:
    value: str
    mode: UriMode = "exact"


@dataclass(frozen=True, slots=True)
class ChainMatch:
    """The reference points at a resource of one of ``target_types`` that matches ``where``."""

    target_types: tuple[str, ...]
    where: tuple[Clause, ...]


Match = TokenMatch | TokenSetMatch | TokenTextMatch | StringMatch | RangeMatch | ReferenceMatch | UriMatch | ChainMatch
IndexKind = Literal["token", "string", "date", "number", "quantity", "reference", "uri"]


@dataclass(frozen=True, slots=True)
class ParamClause:
    """At least one of ``matches`` holds for the parameter (or, negated, none does)."""

    param: str
    kind: IndexKind
    matches: tuple[Match, ...]
    negate: bool = False


@dataclass(frozen=True, slots=True)
class MissingClause:
    param: str
    kind: IndexKind
    missing: bool


@dataclass(frozen=True, slots=True)
class CompositeClause:
    """One of the alternatives holds, each a match per component, all on the same element (group)."""

    param: str
    alternatives: tuple[tuple[tuple[str, IndexKind, Match], ...], ...]


@dataclass(frozen=True, slots=True)
class IdClause:
    ids: tuple[str, ...]
    negate: bool = False


@dataclass(frozen=True, slots=True)
class LastUpdatedClause:
    matches: tuple[RangeMatch, ...]


@dataclass(frozen=True, slots=True)
class HasClause:
    """Reverse chaining: some ``source_type`` resource matching ``where`` references this one by ``param``."""

    source_type: str
    param: str
    where: tuple[Clause, ...]


@dataclass(frozen=True, slots=True)
class AnyClause:
    """At least one of the clauses holds (compartments: any of the membership parameters)."""

    alternatives: tuple[Clause, ...]


Clause = ParamClause | MissingClause | CompositeClause | IdClause | LastUpdatedClause | HasClause | AnyClause


@dataclass(frozen=True, slots=True)
class SortKey:
    param: str  # "_id", "_lastUpdated" or a search parameter
    kind: IndexKind | None  # None for _id/_lastUpdated
    descending: bool = False


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """A search over one resource type, or over several (``resource_types``) for system searches."""

    resource_types: tuple[str, ...]
    where: tuple[Clause, ...] = ()
    sort: tuple[SortKey, ...] = ()
    count: int = 20
    offset: int = 0
    total: TotalMode = "accurate"
    snapshot: int | None = None  # the engine's snapshot token from the first page: stable paging


# -- records: keyed documents with indexed string fields (e.g. the DICOM attribute index) ------------

FieldOp = Literal["eq", "glob", "range", "in"]


@dataclass(frozen=True, slots=True)
class FieldMatch:
    """eq: equal to values[0]; glob: matches the pattern values[0] (``*`` and ``?``);
    range: values[0] <= v <= values[1] ("" for an open end); in: equal to any of values."""

    field: str
    op: FieldOp
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RecordQuery:
    collection: str
    where: tuple[FieldMatch, ...] = ()
    limit: int = 1000
    offset: int = 0
    after_key: str | None = None  # only keys sorting after this one: keyset paging, no OFFSET scan


def searched_types(query: SearchQuery) -> set[str] | None:
    """Every resource type whose stored resources or index rows ``query`` can match on: its own types and
    those of its chains and reverse chains (None: any type, a chain without target types)."""
    found = set(query.resource_types)
    todo: list[Clause] = list(query.where)
    while todo:
        clause = todo.pop()
        if isinstance(clause, AnyClause):
            todo.extend(clause.alternatives)
        elif isinstance(clause, HasClause):
            found.add(clause.source_type)
            todo.extend(clause.where)
        elif isinstance(clause, ParamClause | CompositeClause):
            if isinstance(clause, ParamClause):
                matches = list(clause.matches)
            else:
                matches = [match for alternative in clause.alternatives for *_, match in alternative]
            for match in matches:
                if isinstance(match, ChainMatch):
                    if not match.target_types:
                        return None
                    found.update(match.target_types)
                    todo.extend(match.where)
    return found
