"""Parse a FHIR search request (search.html) into the engine-neutral query and result controls."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, cast

from fhir_server.errors import OperationOutcomeError, bad_request, not_supported, too_costly
from fhir_server.limits import (
    MAX_CHAIN_DEPTH,
    MAX_OR_VALUES,
    MAX_PARAMETER_REPEATS,
    MAX_SEARCH_PARAMETERS,
    MAX_SORT_KEYS,
    whole_number,
)
from fhir_server.search.extract import parse_local_reference
from fhir_server.search.parameters import RESULT_PARAMETERS, SPECIAL_UNSUPPORTED, SearchParameter, lookup
from fhir_server.search.values import approximate, date_range, decimal_range, normalize, now_ts
from fhir_server.storage.query import (
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
    Prefix,
    RangeMatch,
    ReferenceMatch,
    SearchQuery,
    SortKey,
    StringMatch,
    TokenMatch,
    TokenSetMatch,
    TokenTextMatch,
    TotalMode,
    UriMatch,
)

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
SUMMARY_MODES = ("true", "text", "data", "count", "false")
_UNESCAPED_COMMA = re.compile(r"(?<!\\),")
_UNESCAPED_PIPE = re.compile(r"(?<!\\)\|")
_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")
TERMINOLOGY_MODIFIERS = ("in", "not-in", "above", "below")
# (parameter code, modifier, one OR alternative as given) -> the codes a terminology gave for it
TerminologyCodes = Mapping[tuple[str, str, str], tuple[tuple[str, str], ...]]


@dataclass(frozen=True, slots=True)
class IncludeSpec:
    """``_include=Source:param[:Target]`` or ``_revinclude`` (search.html#include)."""

    source_type: str
    param: str  # "*" for every reference parameter
    target_type: str | None
    iterate: bool


@dataclass(slots=True)
class SearchRequest:
    query: SearchQuery
    includes: list[IncludeSpec] = field(default_factory=list)
    revincludes: list[IncludeSpec] = field(default_factory=list)
    summary: str | None = None
    elements: list[str] | None = None
    ignored: list[str] = field(default_factory=list)
    echo: list[tuple[str, str]] = field(default_factory=list)  # the understood parameters, for links


@dataclass(slots=True)
class _Controls:
    count: int
    offset: int = 0
    snapshot: int | None = None
    total: TotalMode = "accurate"
    sort: list[SortKey] = field(default_factory=list)


def split_or(value: str) -> list[str]:
    return [v for v in _UNESCAPED_COMMA.split(value)]


def split_pipe(value: str) -> list[str]:
    """``system|code`` into its parts at unescaped ``|`` (still escaped)."""
    return _UNESCAPED_PIPE.split(value)


def unescape(value: str) -> str:
    return value.replace("\\,", ",").replace("\\|", "|").replace("\\$", "$").replace("\\\\", "\\")


def parse_search(
    resource_types: tuple[str, ...],
    params: list[tuple[str, str]],
    *,
    lenient: bool,
    default_count: int,
    max_count: int,
    local_base: str | None = None,
    codes: TerminologyCodes | None = None,
) -> SearchRequest:
    """search.html: the parameters in order; with ``lenient`` (``Prefer: handling=lenient``) unknown
    parameters and, for filters not named with ``_``, invalid values are ignored and listed in ``ignored``.
    ``codes`` holds the code lists of the token modifiers that need a terminology (``:in``, ``:below``...),
    resolved beforehand (``fhir_server.search.terminology_codes``)."""
    check_bounds(params)
    controls = _Controls(count=default_count)
    request = SearchRequest(query=SearchQuery(resource_types))
    clauses: list[Clause] = []
    parser = _ClauseParser(local_base, codes or {})
    for name, value in params:
        try:
            if _control(request, controls, resource_types, name, value, max_count):
                continue
            clause = parser.clause(resource_types, name, value)
            if clause is not None:
                clauses.append(clause)
                request.echo.append((name, value))
        except OperationOutcomeError:
            if lenient and (not name.startswith("_") or _unknown(resource_types, name)):
                request.ignored.append(name)
                continue
            raise
    if request.summary == "count":
        controls.count = 0
    request.query = SearchQuery(
        resource_types,
        tuple(clauses),
        tuple(controls.sort),
        controls.count,
        controls.offset,
        controls.total,
        controls.snapshot,
    )
    return request


def check_bounds(params: list[tuple[str, str]]) -> None:
    """400 ``too-costly`` for a search beyond the bounds of fhir_server/limits.py, lenient or not:
    each AND, OR, chained hop and sort key adds to the SQL statement, which SQLite caps in depth."""
    if len(params) > MAX_SEARCH_PARAMETERS:
        raise too_costly(f"the search has {len(params)} parameters: at most {MAX_SEARCH_PARAMETERS} are accepted")
    repeats = Counter(name for name, _ in params)
    name, times = repeats.most_common(1)[0] if repeats else ("", 0)
    if times > MAX_PARAMETER_REPEATS:
        raise too_costly(f"{name} is repeated {times} times: at most {MAX_PARAMETER_REPEATS} are accepted", [name])
    for name, value in params:
        base = name.partition(":")[0]
        depth = name.count(".") + name.count("_has:")
        if depth > MAX_CHAIN_DEPTH:
            message = f"{name} chains {depth} levels (chained hops and _has): at most {MAX_CHAIN_DEPTH} are accepted"
            raise too_costly(message, [name])
        alternatives = len(split_or(value)) if base not in ("_elements", "_sort") else 0
        if alternatives > MAX_OR_VALUES:
            raise too_costly(f"{name} has {alternatives} values: at most {MAX_OR_VALUES} are accepted", [name])
        if base == "_sort" and len(value.split(",")) > MAX_SORT_KEYS:
            raise too_costly(f"_sort has {len(value.split(','))} keys: at most {MAX_SORT_KEYS} are accepted", [name])


def _unknown(types: tuple[str, ...], name: str) -> bool:
    """A ``_`` parameter this server does not know (e.g. fhirpy's ``_totalMethod``): lenient handling ignores it."""
    code = name.partition(":")[0].partition(".")[0]
    known = code in RESULT_PARAMETERS or code in ("_id", "_lastUpdated", "_has") or code in SPECIAL_UNSUPPORTED
    return not known and _common_parameter(types, code) is None


def _int(name: str, value: str, minimum: int = 0) -> int:
    number = whole_number(value, name)
    if number is None or number < minimum:
        raise bad_request(f"{name} must be a whole number of at least {minimum}, not {value[:100]!r}", [name])
    return number


def _control(
    request: SearchRequest,
    controls: _Controls,
    types: tuple[str, ...],
    name: str,
    value: str,
    max_count: int,
) -> bool:
    """Apply a result parameter; False when ``name`` is a filter."""
    base, _, modifier = name.partition(":")
    if base not in RESULT_PARAMETERS:
        return False
    if base == "_count":
        controls.count = min(_int(name, value), max_count)
    elif base == "_offset":
        controls.offset = _int(name, value)
    elif base == "_snapshot":
        controls.snapshot = _int(name, value)
    elif base == "_total":
        if value not in ("none", "estimate", "accurate"):
            raise bad_request(f"_total must be none, estimate or accurate, not {value!r}", ["_total"])
        controls.total = cast(TotalMode, value)
    elif base == "_sort":
        controls.sort = [_sort_key(types, key) for key in value.split(",") if key]
    elif base in ("_include", "_revinclude"):
        if modifier not in ("", "iterate", "recurse"):
            raise bad_request(f"unknown modifier {modifier!r} on {base}", [name])
        spec = _include_spec(types, value, iterate=bool(modifier), reverse=base == "_revinclude")
        (request.revincludes if base == "_revinclude" else request.includes).append(spec)
    elif base == "_summary":
        if value not in SUMMARY_MODES:
            raise bad_request(f"_summary must be one of {', '.join(SUMMARY_MODES)}", ["_summary"])
        request.summary = None if value == "false" else value
    elif base == "_elements":
        request.elements = [e.strip() for e in value.split(",") if e.strip()]
    elif base in ("_contained", "_containedType") and value not in ("false", "container"):
        raise not_supported(f"{base}={value} is not supported")
    if base not in ("_count", "_offset", "_snapshot", "_format", "_pretty", "_type"):
        request.echo.append((name, value))
    return True


def _sort_key(types: tuple[str, ...], key: str) -> SortKey:
    descending = key.startswith("-")
    code = key.lstrip("-")
    if code in ("_id", "_lastUpdated"):
        return SortKey(code, None, descending)
    param = _common_parameter(types, code)
    if param is None or param.type in ("composite", "special"):
        raise bad_request(f"cannot sort by {code!r}: not a search parameter of {'/'.join(types)}", ["_sort"])
    return SortKey(code, param.kind, descending)


def _include_spec(types: tuple[str, ...], value: str, *, iterate: bool, reverse: bool) -> IncludeSpec:
    if value == "*":
        return IncludeSpec("*", "*", None, iterate)
    parts = value.split(":")
    if len(parts) not in (2, 3):
        raise bad_request(f"_include value must be Type:param[:Target], not {value!r}", ["_include"])
    source, param_code = parts[0], parts[1]
    target = parts[2] if len(parts) == 3 else None
    if param_code != "*":
        param = lookup(source, param_code)
        if param is None or param.type != "reference":
            raise bad_request(f"{source}:{param_code} is not a reference search parameter", ["_include"])
    if not reverse and not iterate and source not in types:
        raise bad_request(f"_include source {source} is not the type searched", ["_include"])
    return IncludeSpec(source, param_code, target, iterate)


def _common_parameter(types: tuple[str, ...], code: str) -> SearchParameter | None:
    found = [lookup(t, code) for t in types]
    if not found or any(p is None for p in found):
        return None
    first = found[0]
    assert first is not None
    if any(p is not None and p.type != first.type for p in found):
        return None
    return first


class _ClauseParser:
    def __init__(self, local_base: str | None, codes: TerminologyCodes) -> None:
        self.local_base = local_base
        self.codes = codes

    def clause(self, types: tuple[str, ...], name: str, value: str) -> Clause | None:
        if name.startswith("_has:"):
            return self._has(types, name, value)
        head, dot, rest = name.partition(".")
        code, _, modifier = head.partition(":")
        if code == "_id":
            return self._id(modifier, value)
        if code == "_lastUpdated":
            return LastUpdatedClause(tuple(self._range("date", v) for v in split_or(value)))
        if code in SPECIAL_UNSUPPORTED:
            raise not_supported(f"search parameter {code} is not supported")
        param = _common_parameter(types, code)
        if param is None:
            raise bad_request(f"unknown search parameter {code!r} for {'/'.join(types)}", [name])
        if dot:
            return self._chain(types, param, modifier, rest, value)
        return self._param(param, modifier, value)

    def _id(self, modifier: str, value: str) -> Clause:
        if modifier not in ("", "not"):
            raise bad_request(f"modifier :{modifier} is not allowed on _id", ["_id"])
        return IdClause(tuple(unescape(v) for v in split_or(value)), negate=modifier == "not")

    def _has(self, types: tuple[str, ...], name: str, value: str) -> Clause:
        parts = name.split(":", 3)
        if len(parts) < 4:
            raise bad_request(f"_has needs _has:Type:reference:parameter, not {name!r}", [name])
        _, source, ref_code, rest = parts
        if lookup(source, ref_code) is None:
            raise bad_request(f"{source} has no search parameter {ref_code!r}", [name])
        ref = lookup(source, ref_code)
        assert ref is not None
        if ref.type != "reference":
            raise bad_request(f"{source}:{ref_code} is not a reference parameter", [name])
        inner = self.clause((source,), rest, value)
        assert inner is not None
        return HasClause(source, ref_code, (inner,))

    def _chain(self, types: tuple[str, ...], param: SearchParameter, modifier: str, rest: str, value: str) -> Clause:
        if param.type != "reference":
            raise bad_request(f"{param.code} is not a reference parameter: it cannot be chained", [param.code])
        next_code = rest.split(".", 1)[0].split(":", 1)[0]
        candidates = (modifier,) if modifier else param.targets
        targets = tuple(
            t
            for t in candidates
            if next_code.startswith("_has") or lookup(t, next_code) is not None or next_code in ("_id", "_lastUpdated")
        )
        if not targets:
            raise bad_request(f"no target type of {param.code} has a search parameter {next_code!r}", [param.code])
        inner = self.clause(targets, rest, value)
        assert inner is not None
        return ParamClause(param.code, "reference", (ChainMatch(targets, (inner,)),))

    def _param(self, param: SearchParameter, modifier: str, value: str) -> Clause:
        if param.type == "special":
            raise not_supported(f"search parameter {param.code} ({param.type}) is not supported")
        if modifier == "missing":
            if value not in ("true", "false"):
                raise bad_request(f"{param.code}:missing takes true or false", [param.code])
            if param.type == "composite":
                raise not_supported(":missing is not supported on composite parameters")
            return MissingClause(param.code, param.kind, value == "true")
        if param.type == "composite":
            if modifier:
                raise bad_request(f"modifier :{modifier} is not allowed on composite {param.code}", [param.code])
            return self._composite(param, value)
        kind = param.kind
        negate = False
        code = param.code
        if kind == "token" and modifier == "not":
            negate, modifier = True, ""
        elif kind == "token" and modifier == "not-in":
            negate = True
        elif kind == "token" and modifier == "of-type":
            code, modifier = f"{param.code}:of-type", "of-type"
        elif kind == "reference" and modifier == "identifier":
            return ParamClause(f"{param.code}:identifier", "token", tuple(self._token(v) for v in split_or(value)))
        matches = tuple(self._value(param, kind, modifier, v) for v in split_or(value))
        return ParamClause(code, kind, matches, negate)

    def _composite(self, param: SearchParameter, value: str) -> Clause:
        alternatives = []
        for alternative in split_or(value):
            parts = _UNESCAPED_DOLLAR.split(alternative)
            if len(parts) != len(param.components):
                raise bad_request(f"{param.code} takes {len(param.components)} values joined by '$'", [param.code])
            alternatives.append(
                tuple(
                    (component.code, component.kind, self._value(param, component.kind, "", part))
                    for component, part in zip(param.components, parts, strict=True)
                )
            )
        return CompositeClause(param.code, tuple(alternatives))

    def _value(self, param: SearchParameter, kind: IndexKind, modifier: str, value: str) -> Match:
        if kind == "token":
            if modifier == "text":
                return TokenTextMatch(normalize(unescape(value)))
            if modifier == "of-type":
                parts = _UNESCAPED_PIPE.split(value)
                if len(parts) != 3:
                    raise bad_request(f"{param.code}:of-type takes system|code|value", [param.code])
                return TokenMatch(unescape(parts[0]) or None, f"{unescape(parts[1])}|{unescape(parts[2])}")
            if modifier in TERMINOLOGY_MODIFIERS:
                return self._coded(param, modifier, value)
            self._no_modifier(param, modifier, ())
            return self._token(value)
        if kind == "string":
            self._no_modifier(param, modifier, ())
            if modifier == "exact":
                return StringMatch(unescape(value), "exact")
            if modifier == "contains":
                return StringMatch(normalize(unescape(value)), "contains")
            return StringMatch(normalize(unescape(value)), "start")
        if kind in ("date", "number", "quantity"):
            if modifier:
                raise bad_request(f"modifier :{modifier} is not allowed on {kind} parameter {param.code}", [param.code])
            return self._range(kind, value)
        if kind == "reference":
            return self._reference(param, modifier, value)
        if kind == "uri":
            if modifier not in ("", "above", "below"):
                raise bad_request(f"modifier :{modifier} is not allowed on uri parameter {param.code}", [param.code])
            mode = cast(Literal["exact", "above", "below"], modifier or "exact")
            return UriMatch(unescape(value), mode)
        raise bad_request(f"cannot search on {param.code}")

    def _coded(self, param: SearchParameter, modifier: str, value: str) -> TokenSetMatch:
        """search.html#modifiers: ``:in``/``:not-in`` a value set, ``:below``/``:above`` a code (is-a)."""
        found = self.codes.get((param.code, modifier, value))
        if found is None:
            raise not_supported(f":{modifier} on {param.code} is supported on the searched type's own parameters only")
        return TokenSetMatch(found)

    def _no_modifier(self, param: SearchParameter, modifier: str, unsupported: tuple[str, ...]) -> None:
        allowed = {"token": ("",), "string": ("", "exact", "contains")}.get(param.type, ("",))
        if modifier in unsupported:
            raise not_supported(f"modifier :{modifier} on {param.code} needs terminology services, not supported")
        if modifier not in allowed:
            raise bad_request(
                f"modifier :{modifier} is not allowed on {param.type} parameter {param.code}", [param.code]
            )

    def _token(self, value: str) -> TokenMatch:
        parts = _UNESCAPED_PIPE.split(value)
        if len(parts) == 1:
            return TokenMatch(None, unescape(parts[0]))
        if len(parts) == 2:
            system, code = unescape(parts[0]), unescape(parts[1])
            return TokenMatch(system, code or None)
        raise bad_request(f"token value {value!r} has more than one unescaped '|'")

    def _range(self, kind: str, value: str) -> RangeMatch:
        prefix: Prefix = "eq"
        if value[:2] in PREFIXES and len(value) > 2 and not value[2].isalpha():
            prefix, value = cast(Prefix, value[:2]), value[2:]
        if kind == "date":
            span = date_range(value)
            if span is None:
                raise bad_request(f"{value!r} is not a FHIR date, dateTime or instant")
            low, high = approximate(*span, now=now_ts()) if prefix == "ap" else span
            return RangeMatch(prefix, low, high, low)
        system = code = None
        if kind == "quantity":
            parts = _UNESCAPED_PIPE.split(value)
            if len(parts) not in (1, 3):
                raise bad_request(f"quantity value {value!r} must be number or number|system|code")
            value = parts[0]
            if len(parts) == 3:
                system, code = unescape(parts[1]) or None, unescape(parts[2]) or None
        number = decimal_range(value)
        if number is None:
            raise bad_request(f"{value!r} is not a number")
        low, high, exact = number
        if prefix == "ap":
            low, high = approximate(exact, exact)
        return RangeMatch(prefix, low, high, exact, system, code)

    def _reference(self, param: SearchParameter, modifier: str, value: str) -> ReferenceMatch:
        value = unescape(value)
        target_type: str | None = None
        if modifier:
            if modifier in ("above", "below"):
                raise not_supported(f":{modifier} on reference parameters is not supported")
            if modifier not in param.targets:
                raise bad_request(f"{modifier} is not a target type of {param.code}", [param.code])
            target_type = modifier
        if self.local_base and value.startswith(self.local_base + "/"):
            value = value[len(self.local_base) + 1 :]
        if value.startswith(("http://", "https://", "urn:")):
            local = parse_local_reference(value)
            if local is not None and "|" not in value:
                return ReferenceMatch(local[0], local[1], value.split("/_history/")[0])
            return ReferenceMatch(url=value)
        local = parse_local_reference(value)
        if local is not None:
            if target_type is not None and local[0] != target_type:
                raise bad_request(f"{value} is not a {target_type}", [param.code])
            return ReferenceMatch(local[0], local[1])
        if "/" in value or not value:
            raise bad_request(f"{value!r} is not a reference: use id, Type/id or a URL", [param.code])
        return ReferenceMatch(target_type, value)
