"""``_summary`` and ``_elements`` (search.html#summary, search.html#elements)."""

from __future__ import annotations

from typing import Any

from fhir_server.definitions import summary_elements

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}
_ALWAYS = ("resourceType", "id", "meta")


def _mark(resource: dict[str, Any]) -> dict[str, Any]:
    meta = dict(resource.get("meta") or {})
    meta["tag"] = [*(meta.get("tag") or []), SUBSETTED]
    resource["meta"] = meta
    return resource


def _keep(resource: dict[str, Any], names: set[str] | frozenset[str]) -> dict[str, Any]:
    kept = {}
    for key, value in resource.items():
        stem = key.lstrip("_")
        if (
            key in _ALWAYS
            or stem in names
            or any(stem.startswith(n) and len(stem) > len(n) and stem[len(n)].isupper() for n in names)
        ):
            kept[key] = value
    return kept


def apply_summary(resource: dict[str, Any], mode: str | None, elements: list[str] | None) -> dict[str, Any]:
    if mode in (None, "false") and not elements:
        return resource
    summary, mandatory = summary_elements(resource.get("resourceType", ""))
    if mode == "true":
        return _mark(_keep(resource, summary | mandatory))
    if mode == "text":
        return _mark(_keep(resource, {"text"} | mandatory))
    if mode == "data":
        return _mark({k: v for k, v in resource.items() if k != "text"})
    if elements:
        return _mark(_keep(resource, set(elements) | mandatory))
    return resource
