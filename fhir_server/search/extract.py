"""Compute a resource's search index rows at write time, from the R4 search parameters."""

from __future__ import annotations

import functools
from typing import Any

from fhir_server.limits import MAX_INDEXED_STRING
from fhir_server.search.parameters import Component, SearchParameter, parameters_for
from fhir_server.search.values import MAX_TS, MIN_TS, as_number, date_range, normalize
from fhir_server.storage.index_keys import exact_key, prefix_key
from fhir_server.storage.port import IndexEntries, RangeRow, ReferenceRow, StringRow, TokenRow, UriRow
from fhir_server.storage.query import IndexKind

SKIPPED = frozenset({"_id", "_lastUpdated"})  # answered from the resource row
_NAME_PARTS = ("family", "given", "prefix", "suffix", "text")
_ADDRESS_PARTS = ("line", "city", "district", "state", "postalCode", "country", "text")


def parse_local_reference(ref: str) -> tuple[str, str] | None:
    """``Type/id``, ``Type/id/_history/n`` or an absolute URL ending so: (type, id)."""
    path = ref.split("/_history/")[0]
    parts = path.split("/")
    if len(parts) < 2 or not parts[-2][:1].isupper() or not parts[-1]:
        return None
    if len(parts) > 2 and not ref.startswith(("http://", "https://")):
        return None
    return parts[-2], parts[-1]


def warm_up(resource_types: tuple[str, ...]) -> None:
    """Compile the search parameters of these types now, not on the first writes that need them."""
    for resource_type in resource_types:
        _indexed(resource_type)


@functools.cache
def _indexed(resource_type: str) -> tuple[tuple[str, SearchParameter], ...]:
    """The parameters of a type that index rows, in a fixed order."""
    return tuple(
        (code, param)
        for code, param in parameters_for(resource_type).items()
        if code not in SKIPPED and param.evaluate is not None and param.type != "special"
    )


def index_resource(resource: dict[str, Any], local_base: str | None = None) -> IndexEntries:
    entries = IndexEntries()
    group = 0
    for code, param in _indexed(resource["resourceType"]):
        assert param.evaluate is not None
        nodes = param.evaluate(resource)
        if not nodes:
            continue
        if param.type == "composite":
            for element, _ in nodes:
                group += 1
                _index_composite(entries, param, element, group)
        else:
            for value, type_name in nodes:
                _add(entries, param.kind, code, value, type_name, None, local_base)
    return entries


def _index_composite(entries: IndexEntries, param: SearchParameter, element: Any, group: int) -> None:
    for component in param.components:
        _add_component(entries, component, element, group)


def _add_component(entries: IndexEntries, component: Component, element: Any, group: int) -> None:
    for value, type_name in component.evaluate(element):
        _add(entries, component.kind, component.code, value, type_name, group, None)


def _add(
    entries: IndexEntries,
    kind: IndexKind,
    code: str,
    value: Any,
    type_name: str | None,
    group: int | None,
    local_base: str | None,
) -> None:
    if kind == "token":
        _tokens(entries, code, value, group)
    elif kind == "string":
        for text in _strings(value):
            kept = text[:MAX_INDEXED_STRING]  # the rest costs a write its time and searches nothing more
            entries.strings.append(StringRow(code, prefix_key(normalize(kept)), kept, group))
    elif kind == "date":
        span = _date_span(value)
        if span is not None:
            entries.dates.append(RangeRow(code, span[0], span[1], group=group))
    elif kind == "number":
        number = as_number(value)
        if number is not None:
            entries.numbers.append(RangeRow(code, number, number, group=group))
    elif kind == "quantity":
        _quantities(entries, code, value, group)
    elif kind == "reference":
        _references(entries, code, value, group, local_base)
    elif kind == "uri" and isinstance(value, str):
        entries.uris.append(UriRow(code, exact_key(value), group))


def _token(code: str, system: Any, value: Any, text: str | None = None, group: int | None = None) -> TokenRow:
    """A token row whose system and code are bounded (``index_keys``)."""
    return TokenRow(
        code,
        exact_key(system) if isinstance(system, str) else system,
        exact_key(value) if isinstance(value, str) else value,
        text,
        group,
    )


def _tokens(entries: IndexEntries, code: str, value: Any, group: int | None) -> None:
    rows = entries.tokens
    if isinstance(value, bool):
        rows.append(TokenRow(code, None, "true" if value else "false", None, group))
    elif isinstance(value, str):
        rows.append(_token(code, None, value, None, group))
    elif isinstance(value, dict):
        if "coding" in value or ("text" in value and "code" not in value and "value" not in value):
            text = value.get("text")
            for coding in value.get("coding") or []:
                if isinstance(coding, dict):
                    display = coding.get("display") or text
                    rows.append(_token(code, coding.get("system"), coding.get("code"), _norm(display), group))
            if not value.get("coding") and isinstance(text, str):
                rows.append(TokenRow(code, None, None, _norm(text), group))
        elif "value" in value and isinstance(value.get("value"), str):  # Identifier, ContactPoint
            type_text = (value.get("type") or {}).get("text") if isinstance(value.get("type"), dict) else None
            rows.append(_token(code, value.get("system"), value["value"], _norm(type_text), group))
            for coding in (value.get("type") or {}).get("coding") or [] if isinstance(value.get("type"), dict) else []:
                if isinstance(coding, dict):
                    rows.append(
                        _token(f"{code}:of-type", coding.get("system"), f"{coding.get('code')}|{value['value']}")
                    )
        elif "code" in value or "system" in value:  # Coding, Quantity's unit
            rows.append(_token(code, value.get("system"), value.get("code"), _norm(value.get("display")), group))


def _norm(text: Any) -> str | None:
    return prefix_key(normalize(text[:MAX_INDEXED_STRING])) if isinstance(text, str) else None


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, dict):
        return []
    parts = _NAME_PARTS if any(k in value for k in ("family", "given")) else _ADDRESS_PARTS
    found: list[str] = []
    for key in parts:
        item = value.get(key)
        if isinstance(item, str):
            found.append(item)
        elif isinstance(item, list):
            found.extend(x for x in item if isinstance(x, str))
    return found


def _date_span(value: Any) -> tuple[float, float] | None:
    if isinstance(value, str):
        return date_range(value)
    if not isinstance(value, dict):
        return None
    if "start" in value or "end" in value:  # Period
        start = date_range(value["start"]) if isinstance(value.get("start"), str) else None
        end = date_range(value["end"]) if isinstance(value.get("end"), str) else None
        return (start[0] if start else MIN_TS), (end[1] if end else MAX_TS)
    events = [date_range(e) for e in value.get("event") or [] if isinstance(e, str)]  # Timing
    bounds = (value.get("repeat") or {}).get("boundsPeriod") if isinstance(value.get("repeat"), dict) else None
    spans = [s for s in events if s]
    if isinstance(bounds, dict):
        span = _date_span(bounds)
        if span:
            spans.append(span)
    if not spans:
        return None
    return min(s[0] for s in spans), max(s[1] for s in spans)


def _quantities(entries: IndexEntries, code: str, value: Any, group: int | None) -> None:
    if not isinstance(value, dict):
        number = as_number(value)
        if number is not None:
            entries.quantities.append(RangeRow(code, number, number, group=group))
        return
    if "low" in value or "high" in value:  # Range
        low = value.get("low") or {}
        high = value.get("high") or {}
        lv, hv = as_number(low.get("value")), as_number(high.get("value"))
        unit = low if lv is not None else high
        entries.quantities.append(
            RangeRow(
                code,
                lv if lv is not None else MIN_TS,
                hv if hv is not None else MAX_TS,
                unit.get("system"),
                unit.get("code") or unit.get("unit"),
                group,
            )
        )
        return
    number = as_number(value.get("value"))
    if number is not None:
        unit_code = value.get("code") or value.get("unit") or value.get("currency")
        entries.quantities.append(RangeRow(code, number, number, value.get("system"), unit_code, group))


def _reference_row(
    code: str, target_type: str | None, target_id: str | None, url: str | None, group: int | None
) -> ReferenceRow:
    """A reference row whose id and url are bounded (``index_keys``)."""
    return ReferenceRow(
        code,
        target_type,
        None if target_id is None else exact_key(target_id),
        None if url is None else exact_key(url),
        group,
    )


def _references(entries: IndexEntries, code: str, value: Any, group: int | None, local_base: str | None) -> None:
    if isinstance(value, str):  # canonical or uri
        entries.references.append(_reference_row(code, None, None, value, group))
        if "|" in value:
            entries.references.append(_reference_row(code, None, None, value.split("|", 1)[0], group))
        return
    if not isinstance(value, dict):
        return
    identifier = value.get("identifier")
    if isinstance(identifier, dict) and isinstance(identifier.get("value"), str):
        entries.tokens.append(_token(f"{code}:identifier", identifier.get("system"), identifier["value"]))
    ref = value.get("reference")
    if not isinstance(ref, str) or ref.startswith("#"):
        return
    if local_base and ref.startswith(local_base + "/"):
        ref = ref[len(local_base) + 1 :]
    target = parse_local_reference(ref)
    if target is not None and not ref.startswith(("http://", "https://")):
        entries.references.append(_reference_row(code, target[0], target[1], None, group))
    elif target is not None:
        entries.references.append(_reference_row(code, target[0], target[1], ref.split("/_history/")[0], group))
    else:
        entries.references.append(_reference_row(code, None, None, ref, group))
