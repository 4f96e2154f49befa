"""Translate the engine-neutral search query into SQL over one tenant's index tables."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fhir_server.storage.index_keys import below_key, exact_key, prefix_key
from fhir_server.storage.query import (
    AnyClause,
    ChainMatch,
    Clause,
    CompositeClause,
    HasClause,
    IdClause,
    IndexKind,
    LastUpdatedClause,
    Match,
    MissingClause,
    ParamClause,
    RangeMatch,
    ReferenceMatch,
    SearchQuery,
    SortKey,
    StringMatch,
    TokenMatch,
    TokenSetMatch,
    TokenTextMatch,
    UriMatch,
)
from fhir_server.storage.sqlite.schema import INDEX_TABLES

_SORT_VALUE = {
    "token": "code",
    "string": "norm",
    "date": "low",
    "number": "low",
    "quantity": "low",
    "reference": "target_id",
    "uri": "value",
}


# prefix -> (condition on the row's [low, high), the search value's operands in order)
_DATE_PREFIXES: dict[str, tuple[str, tuple[str, ...]]] = {
    "eq": ("({low} >= ? AND {high} <= ?)", ("low", "high")),
    "ne": ("NOT ({low} >= ? AND {high} <= ?)", ("low", "high")),
    "gt": ("{high} > ?", ("high",)),
    "lt": ("{low} < ?", ("low",)),
    "ge": ("{high} > ?", ("low",)),
    "le": ("{low} < ?", ("high",)),
    "sa": ("{low} >= ?", ("high",)),
    "eb": ("{high} <= ?", ("low",)),
    "ap": ("({low} < ? AND {high} > ?)", ("high", "low")),
}
_VALUE_PREFIXES: dict[str, tuple[str, tuple[str, ...]]] = {
    "eq": ("({low} >= ? AND {high} < ?)", ("low", "high")),
    "ne": ("NOT ({low} >= ? AND {high} < ?)", ("low", "high")),
    "gt": ("{high} > ?", ("value",)),
    "lt": ("{low} < ?", ("value",)),
    "ge": ("{high} >= ?", ("value",)),
    "le": ("{low} <= ?", ("value",)),
    "sa": ("{low} > ?", ("value",)),
    "eb": ("{high} < ?", ("value",)),
    "ap": ("({low} >= ? AND {high} <= ?)", ("low", "high")),
}


def like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class SqlBuilder:
    """Builds one statement; collects its parameters in order."""

    def __init__(self) -> None:
        self.args: list[Any] = []
        self._aliases = 0

    def _alias(self, stem: str) -> str:
        self._aliases += 1
        return f"{stem}{self._aliases}"

    def _in(self, values: Sequence[Any]) -> str:
        self.args.extend(values)
        return ",".join("?" * len(values))

    # -- the resource-level WHERE -------------------------------------------------------------
    def where(self, alias: str, types: Sequence[str], clauses: Sequence[Clause]) -> str:
        # With a selective clause, the unary + keeps SQLite from scanning the type index and
        # checking every row: it looks up the rows the clause's subquery found instead.
        selective = any(
            isinstance(c, ParamClause | IdClause | CompositeClause) and not getattr(c, "negate", False) for c in clauses
        )
        parts = [f"{self._type_column(alias, selective)} IN ({self._in(types)})", self._live(alias)]
        parts.extend(self._clause(alias, types, clause) for clause in clauses)
        return " AND ".join(parts)

    def _type_column(self, alias: str, selective: bool) -> str:
        return f"+{alias}.type" if selective else f"{alias}.type"

    def _live(self, alias: str) -> str:
        """The condition that a resource row is not a tombstone."""
        return f"{alias}.deleted = 0"

    def _clause(self, alias: str, types: Sequence[str], clause: Clause) -> str:
        if isinstance(clause, ParamClause):
            return self._param_clause(alias, types, clause)
        if isinstance(clause, MissingClause):
            x = self._alias("m")
            table = INDEX_TABLES[clause.kind]
            sub = f"SELECT {x}.rid FROM {table} {x} WHERE {x}.type IN ({self._in(types)}) AND {x}.param = ?"
            self.args.append(clause.param)
            return f"{alias}.rid {'NOT IN' if clause.missing else 'IN'} ({sub})"
        if isinstance(clause, CompositeClause):
            alternatives = [self._composite(alias, types, clause.param, alt) for alt in clause.alternatives]
            return "(" + " OR ".join(alternatives) + ")"
        if isinstance(clause, IdClause):
            return f"{alias}.id {'NOT IN' if clause.negate else 'IN'} ({self._in(clause.ids)})"
        if isinstance(clause, LastUpdatedClause):
            conds = [
                self._range(f"{alias}.last_updated_ts", f"{alias}.last_updated_ts + 0.001", m, "date")
                for m in clause.matches
            ]
            return "(" + " OR ".join(conds) + ")"
        if isinstance(clause, AnyClause):
            return "(" + " OR ".join(self._clause(alias, types, c) for c in clause.alternatives) + ")"
        if isinstance(clause, HasClause):
            x, r2 = self._alias("h"), self._alias("r")
            self.args.append(clause.param)
            inner = self.where(r2, [clause.source_type], clause.where)
            sub = (
                f"SELECT {x}.target_id FROM idx_reference {x} JOIN resource {r2} ON {r2}.rid = {x}.rid "
                f"WHERE {x}.param = ? AND {x}.target_type = {alias}.type AND {inner}"
            )
            return f"{alias}.id IN ({sub})"
        raise TypeError(f"unknown clause {clause!r}")

    def _param_clause(self, alias: str, types: Sequence[str], clause: ParamClause) -> str:
        x = self._alias("i")
        table = INDEX_TABLES[clause.kind]
        head = f"SELECT {x}.rid FROM {table} {x} WHERE {x}.type IN ({self._in(types)}) AND {x}.param = ?"
        self.args.append(clause.param)
        conds = " OR ".join(self._match(x, clause.kind, m) for m in clause.matches)
        if len(clause.matches) > 1:  # a single match needs no parentheses: each nesting costs parser stack
            conds = f"({conds})"
        return f"{alias}.rid {'NOT IN' if clause.negate else 'IN'} ({head} AND {conds})"

    def _composite(
        self, alias: str, types: Sequence[str], param: str, parts: tuple[tuple[str, IndexKind, Match], ...]
    ) -> str:
        first = self._alias("c")
        joins, conds = [], []
        head_types = self._in(types)
        for position, (component, kind, match) in enumerate(parts):
            x = first if position == 0 else self._alias("c")
            table = INDEX_TABLES[kind]
            if position == 0:
                joins.append(f"FROM {table} {x}")
            else:
                joins.append(f"JOIN {table} {x} ON {x}.rid = {first}.rid AND {x}.grp = {first}.grp")
            conds.append(f"{x}.param = ?")
            self.args.append(component)
            conds.append("(" + self._match(x, kind, match) + ")")
        sub = f"SELECT {first}.rid {' '.join(joins)} WHERE {first}.type IN ({head_types}) AND " + " AND ".join(conds)
        return f"{alias}.rid IN ({sub})"

    # -- one match against one index row alias ---------------------------------------------------
    def _match(self, x: str, kind: IndexKind, match: Match) -> str:
        if isinstance(match, TokenMatch):
            return self._token(x, match)
        if isinstance(match, TokenSetMatch):
            return self._token_set(x, match)
        if isinstance(match, TokenTextMatch):
            self.args.extend([like_escape(match.text) + "%", "% " + like_escape(match.text) + "%"])
            return f"({x}.text LIKE ? ESCAPE '\\' OR {x}.text LIKE ? ESCAPE '\\')"
        if isinstance(match, StringMatch):
            return self._string(x, match)
        if isinstance(match, RangeMatch):
            cond = self._range(f"{x}.low", f"{x}.high", match, kind)
            if kind == "quantity" and match.code is not None:
                cond = f"({cond} AND {x}.code = ?)"
                self.args.append(match.code)
                if match.system is not None:
                    cond = f"({cond} AND {x}.system = ?)"
                    self.args.append(match.system)
            return cond
        if isinstance(match, ReferenceMatch):
            return self._reference(x, match)
        if isinstance(match, UriMatch):
            return self._uri(x, match)
        if isinstance(match, ChainMatch):
            per_type = []
            for target_type in match.target_types:  # uncorrelated: each subquery runs once
                r2 = self._alias("r")
                self.args.append(target_type)
                inner = self.where(r2, [target_type], match.where)
                per_type.append(
                    f"{x}.target_type = ? AND {x}.target_id IN (SELECT {r2}.id FROM resource {r2} WHERE {inner})"
                )
            # SQLite's parser stack (100 deep in 3.40) bounds the nesting: parentheses only where OR needs them
            return per_type[0] if len(per_type) == 1 else "(" + " OR ".join(f"({p})" for p in per_type) + ")"
        raise TypeError(f"unknown match {match!r}")

    def _token(self, x: str, m: TokenMatch) -> str:
        conds = []
        if m.code is not None:
            conds.append(f"{x}.code = ?")
            self.args.append(exact_key(m.code))
        if m.system == "":
            conds.append(f"{x}.system IS NULL")
        elif m.system is not None:
            conds.append(f"{x}.system = ?")
            self.args.append(exact_key(m.system))
        return " AND ".join(conds) or "1 = 1"

    def _token_set(self, x: str, m: TokenSetMatch) -> str:
        """One ``system = ? AND code IN (...)`` per system: flat, whatever the number of codes. A row without
        a system is a ``code`` element (``Patient.gender``), whose system its binding implies: its code counts."""
        by_system: dict[str, list[str]] = {}
        for system, code in m.codes:
            by_system.setdefault(system, []).append(code)
        conds = []
        for system, codes in by_system.items():
            self.args.append(system)
            self.args.extend(codes)
            conds.append(f"(({x}.system = ? OR {x}.system IS NULL) AND {x}.code IN ({', '.join('?' * len(codes))}))")
        return "(" + " OR ".join(conds) + ")" if conds else "1 = 0"

    def _string(self, x: str, m: StringMatch) -> str:
        if m.mode == "exact":
            self.args.append(m.value)
            return f"{x}.exact = ?"
        value = prefix_key(m.value)  # the index keeps this much of ``norm``
        if m.mode == "contains":
            self.args.append("%" + like_escape(value) + "%")
            return f"{x}.norm LIKE ? ESCAPE '\\'"
        self.args.extend([value, value + "\U0010ffff"])
        return f"({x}.norm >= ? AND {x}.norm < ?)"

    def _reference(self, x: str, m: ReferenceMatch) -> str:
        conds = []
        if m.target_id is not None:
            conds.append(f"{x}.target_id = ?")
            self.args.append(exact_key(m.target_id))
        if m.target_type is not None:
            conds.append(f"{x}.target_type = ?")
            self.args.append(m.target_type)
        if m.url is not None:
            conds.append(f"{x}.url = ?")
            self.args.append(exact_key(m.url))
        return " AND ".join(conds) or "1 = 1"

    def _uri(self, x: str, m: UriMatch) -> str:
        if m.mode == "below":
            self.args.append(like_escape(below_key(m.value)) + "%")
            return f"{x}.value LIKE ? ESCAPE '\\'"
        if m.mode == "above":
            self.args.append(m.value)
            return f"? LIKE (REPLACE(REPLACE({x}.value, '%', '\\%'), '_', '\\_') || '%') ESCAPE '\\'"
        self.args.append(exact_key(m.value))
        return f"{x}.value = ?"

    def _range(self, low: str, high: str, m: RangeMatch, kind: IndexKind) -> str:
        """search.html#prefix: dates compare ranges; numbers and quantities compare values."""
        template, operands = (_DATE_PREFIXES if kind == "date" else _VALUE_PREFIXES)[m.prefix]
        values = {"low": m.low, "high": m.high, "value": m.value}
        self.args.extend(values[name] for name in operands)
        return template.format(low=low, high=high)

    # -- ordering ----------------------------------------------------------------------------
    def order_by(self, alias: str, keys: Sequence[SortKey]) -> str:
        terms = []
        for key in keys:
            direction = "DESC" if key.descending else "ASC"
            if key.param == "_id":
                terms.append(f"{alias}.id {direction}")
            elif key.param == "_lastUpdated":
                terms.append(f"{alias}.last_updated_ts {direction}")
            elif key.kind is not None:
                column = _SORT_VALUE[key.kind]
                aggregate = "MAX" if key.descending and key.kind != "string" else "MIN"
                x = self._alias("s")
                table = INDEX_TABLES[key.kind]
                terms.append(
                    f"(SELECT {aggregate}({x}.{column}) FROM {table} {x} "
                    f"WHERE {x}.rid = {alias}.rid AND {x}.param = ?) {direction} NULLS LAST"
                )
                self.args.append(key.param)
        terms.append(f"{alias}.rid ASC")
        return ", ".join(terms)


def search_sql(query: SearchQuery, builder: type[SqlBuilder] = SqlBuilder) -> tuple[str, list[Any], str, list[Any]]:
    """The page statement and the count statement for a search (``?`` placeholders)."""
    page = builder()
    where = page.where("r", query.resource_types, query.where)
    if query.snapshot is not None:
        where += " AND r.rid <= ?"
        page.args.append(query.snapshot)
    count_sql = f"SELECT COUNT(*) FROM resource r WHERE {where}"
    count_args = list(page.args)
    order = page.order_by("r", query.sort)
    page.args.extend([query.count, query.offset])
    page_sql = f"SELECT r.type, r.id FROM resource r WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?"
    return page_sql, page.args, count_sql, count_args
