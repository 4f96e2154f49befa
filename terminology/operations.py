"""The operations of the FHIR R4 terminology module (terminology-service.html), each a function of
already-read inputs that answers a ``Parameters`` (or, for ``$expand``, a ``ValueSet``) resource."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from terminology.codesystem import CodeSystemView
from terminology.errors import TerminologyError, invalid, unknown
from terminology.expansion import Entry, Expander
from terminology.resolver import Resolver, require_code_system

MAX_COUNT = 1_000  # codes one $expand page may hold
MAX_FILTER = 200  # characters of the $expand text filter


def parameters(*items: tuple[str, Any] | None) -> dict[str, Any]:
    """A Parameters resource from (name, value-part) pairs; ``None`` pairs are left out."""
    return {"resourceType": "Parameters", "parameter": [{"name": n, **v} for n, v in (i for i in items if i)]}


def _part(name: str, value: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, **value}


async def lookup(resolver: Resolver, system: str, code: str, version: str | None = None) -> dict[str, Any]:
    """codesystem-operation-lookup.html: name, version, display, designations and properties of a code."""
    index = await require_code_system(resolver, system, version, "system")
    concept = index.get(code)
    if concept is None:
        raise TerminologyError(404, "not-found", f"{code} is not a code of {system}", ["code"])
    items: list[tuple[str, Any] | None] = [("name", {"valueString": index.name or index.url})]
    items.append(("version", {"valueString": index.version}) if index.version else None)
    items.append(("display", {"valueString": concept.display or concept.code}))
    items.append(("definition", {"valueString": concept.definition}) if concept.definition else None)
    for designation in concept.designations:
        parts = [_part("value", {"valueString": designation.get("value", "")})]
        if designation.get("language"):
            parts.insert(0, _part("language", {"valueCode": designation["language"]}))
        if isinstance(designation.get("use"), dict):
            parts.insert(-1, _part("use", {"valueCoding": designation["use"]}))
        items.append(("designation", {"part": parts}))
    for name, codes in (("parent", concept.parents), ("child", concept.children)):
        items.extend(
            ("property", {"part": [_part("code", {"valueCode": name}), _part("value", {"valueCode": c})]})
            for c in codes
        )
    for prop in concept.properties:
        value = {k: v for k, v in prop.items() if k.startswith("value")}
        items.append(
            ("property", {"part": [_part("code", {"valueCode": prop.get("code", "")}), _part("value", value)]})
        )
    return parameters(*items)


async def subsumes(
    resolver: Resolver, system: str, code_a: str, code_b: str, version: str | None = None
) -> dict[str, Any]:
    """codesystem-operation-subsumes.html: equivalent, subsumes, subsumed-by or not-subsumed."""
    index = await require_code_system(resolver, system, version, "system")
    for name, code in (("codeA", code_a), ("codeB", code_b)):
        if index.get(code) is None:
            raise invalid(f"{code} is not a code of {system}", name)
    return parameters(("outcome", {"valueCode": index.subsumption(code_a, code_b)}))


async def expand(
    resolver: Resolver,
    value_set: dict[str, Any],
    *,
    text: str | None = None,
    offset: int = 0,
    count: int | None = None,
) -> dict[str, Any]:
    """valueset-operation-expand.html: the value set with an ``expansion``; ``text`` keeps the codes
    whose code, display or designations contain it (case-insensitive), ``offset``/``count`` page the result."""
    if text is not None and len(text) > MAX_FILTER:
        raise invalid(f"filter is longer than {MAX_FILTER} characters", "filter")
    count = MAX_COUNT if count is None else count
    if count > MAX_COUNT:
        raise TerminologyError(400, "too-costly", f"count is at most {MAX_COUNT}", ["count"])
    entries = await Expander(resolver, terms=bool(text)).expand(value_set)
    if text:
        needle = text.casefold()
        entries = [e for e in entries if e.mentions(needle)]
    expansion: dict[str, Any] = {
        "identifier": f"urn:uuid:{uuid.uuid4()}",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "total": len(entries),
        "offset": offset,
        "parameter": _expansion_parameters(text, offset, count),
    }
    page = entries[offset : offset + count]
    if page:
        expansion["contains"] = [e.contains() for e in page]
    result = {k: v for k, v in value_set.items() if k not in ("expansion", "text", "meta")}
    result["expansion"] = expansion
    return result


def _expansion_parameters(text: str | None, offset: int, count: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = [{"name": "offset", "valueInteger": offset}, {"name": "count", "valueInteger": count}]
    if text:
        found.insert(0, {"name": "filter", "valueString": text})
    return found


async def validate_code(
    resolver: Resolver, value_set: dict[str, Any], system: str | None, code: str, display: str | None = None
) -> dict[str, Any]:
    """valueset-operation-validate-code.html: ``result`` true when the code is in the value set; a wrong
    display is a failure too. An invalid code is an answer (200), not an error."""
    entries = await Expander(resolver).expand(value_set)
    match = _find(entries, system, code)
    name = value_set.get("url") or value_set.get("id") or "the value set"
    if match is None:
        where = f"{system}#{code}" if system else code
        return _invalid(f"{where} is not in {name}")
    return _judged(match, code, display)


def validate_in_code_system(index: CodeSystemView, code: str, display: str | None = None) -> dict[str, Any]:
    """codesystem-operation-validate-code.html: the code looked up directly (no expansion, any size)."""
    concept = index.get(code)
    if concept is None:
        return _invalid(f"{code} is not a code of {index.url}")
    return _judged(Entry(index.url, concept.code, concept.display), code, display)


def _invalid(message: str, *rest: tuple[str, Any] | None) -> dict[str, Any]:
    return parameters(("result", {"valueBoolean": False}), ("message", {"valueString": message}), *rest)


def _judged(match: Entry, code: str, display: str | None) -> dict[str, Any]:
    """A code found: valid unless ``display`` is given and is not its display (case-insensitive)."""
    display_item = ("display", {"valueString": match.display}) if match.display else None
    if display is not None and match.display is not None and display.casefold() != match.display.casefold():
        return _invalid(
            f"the display {display!r} is not the display of {match.system}#{code}: {match.display!r}", display_item
        )
    return parameters(("result", {"valueBoolean": True}), display_item)


def _find(entries: list[Entry], system: str | None, code: str) -> Entry | None:
    return next((e for e in entries if e.code == code and (system is None or e.system == system)), None)


async def translate(
    resolver: Resolver, maps: list[dict[str, Any]], system: str, code: str, target_system: str | None = None
) -> dict[str, Any]:
    """conceptmap-operation-translate.html: the matches for ``system#code`` in ``maps``; ``result`` is
    true when one of them is an equivalence other than unmatched/disjoint."""
    matches: list[dict[str, Any]] = []
    for concept_map in maps:
        matches.extend(_matches(concept_map, system, code, target_system))
    positive = any(m["equivalence"] not in ("unmatched", "disjoint") for m in matches)
    message = None if matches else ("message", {"valueString": f"no mapping of {system}#{code} is known"})
    items: list[tuple[str, Any] | None] = [("result", {"valueBoolean": positive}), message]
    for match in matches:
        parts = [_part("equivalence", {"valueCode": match["equivalence"]})]
        if match.get("concept"):
            parts.append(_part("concept", {"valueCoding": match["concept"]}))
        if match.get("comment"):
            parts.append(_part("comment", {"valueString": match["comment"]}))
        parts.append(_part("source", {"valueUri": match["source"]}))
        items.append(("match", {"part": parts}))
    return parameters(*items)


def _matches(concept_map: dict[str, Any], system: str, code: str, target_system: str | None) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    source = str(concept_map.get("url", ""))
    for group in concept_map.get("group") or []:
        if group.get("source") != system or (target_system and group.get("target") != target_system):
            continue
        for element in group.get("element") or []:
            if element.get("code") != code:
                continue
            for target in element.get("target") or []:
                concept = {"system": group.get("target"), "code": target.get("code")} if target.get("code") else None
                if concept is not None and target.get("display"):
                    concept["display"] = target["display"]
                found.append(
                    {
                        "equivalence": target.get("equivalence", "equivalent"),
                        "concept": concept,
                        "comment": target.get("comment"),
                        "source": source,
                    }
                )
    return found


def require_map(found: dict[str, Any] | None, url: str) -> dict[str, Any]:
    if found is None:
        raise unknown(f"concept map {url}", "url")
    return found
