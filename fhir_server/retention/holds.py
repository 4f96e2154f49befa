"""Legal holds as ``Flag`` resources (flag.html), and what an active one keeps from deletion.

A hold is a ``Flag`` whose ``code`` is ``urn:dermbridge:record-flag|legal-hold``, ``subject`` the
Patient, ``meta.tag`` the same coding (R4 defines no ``code`` search on Flag; ``_tag`` is searchable on
every resource), ``period.start`` when it was placed, ``author`` who placed it and an extension why. A
hold on a case (``DiagnosticReport``) names it in the ``urn:dermbridge:legal-hold-case`` extension; the
subject stays the Patient, so holds are found by an ordinary search
(``Flag?subject=Patient/1&_tag=urn:dermbridge:record-flag|legal-hold``) and live in the patient's
compartment. Releasing sets ``status`` inactive and ``period.end``.

What an active hold blocks (``hold_on``): on a patient, every resource of the patient's record and
the Patient itself; on a case, the Patient, the case and what the case references (its results,
imaging study, media, specimens), the evidence of the case. The hold ``Flag`` itself too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from fhir_server.errors import OperationOutcomeError, conflict
from fhir_server.search.extract import parse_local_reference
from fhir_server.search.membership import owners
from fhir_server.search.request import parse_search
from fhir_server.storage.port import ResourceVersion, TenantReader

FLAG_SYSTEM = "urn:dermbridge:record-flag"
LEGAL_HOLD = "legal-hold"
CASE_EXTENSION = "urn:dermbridge:legal-hold-case"
REASON_EXTENSION = "urn:dermbridge:legal-hold-reason"
RELEASED_BY_EXTENSION = "urn:dermbridge:legal-hold-released-by"
RELEASE_REASON_EXTENSION = "urn:dermbridge:legal-hold-release-reason"
MAX_HOLDS = 1000  # holds (active or released) read per patient: far above any real count
CASE_EVIDENCE = ("result", "imagingStudy", "specimen", "basedOn")


def is_hold(resource: dict[str, Any] | None) -> bool:
    """Whether ``resource`` is a legal-hold Flag (active or released)."""
    if resource is None or resource.get("resourceType") != "Flag":
        return False
    codings = (resource.get("code") or {}).get("coding") or []
    return any(c.get("system") == FLAG_SYSTEM and c.get("code") == LEGAL_HOLD for c in codings if isinstance(c, dict))


HOLD_EXTENSIONS = frozenset({CASE_EXTENSION, REASON_EXTENSION, RELEASED_BY_EXTENSION, RELEASE_REASON_EXTENSION})


def looks_like_hold(resource: dict[str, Any] | None) -> bool:
    """Whether a Flag carries any mark of a legal hold: the hold coding in ``code`` or ``meta.tag``, or
    one of the hold extensions, system, code and URL compared case-insensitively.

    Broader than :func:`is_hold` (which decides what blocks a deletion): a client writing such a Flag
    would plant a look-alike hold that the hold query (``_tag``) and a reader would take for a real one."""
    if resource is None or resource.get("resourceType") != "Flag":
        return False
    meta, code = resource.get("meta"), resource.get("code")
    tags = _list(meta.get("tag")) if isinstance(meta, dict) else []
    codings = [*tags, *(_list(code.get("coding")) if isinstance(code, dict) else [])]
    if any(_is_hold_coding(c) for c in codings):
        return True
    extensions = [e for key in ("extension", "modifierExtension") for e in _list(resource.get(key))]
    return any(isinstance(e, dict) and str(e.get("url", "")).lower() in HOLD_EXTENSIONS for e in extensions)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _is_hold_coding(coding: Any) -> bool:
    return (
        isinstance(coding, dict)
        and str(coding.get("system", "")).lower() == FLAG_SYSTEM
        and str(coding.get("code", "")).lower() == LEGAL_HOLD
    )


def extension(resource: dict[str, Any], url: str) -> Any:
    """The value of the first extension ``url`` of ``resource``, if any."""
    for ext in resource.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == url:
            return next((v for k, v in ext.items() if k.startswith("value")), None)
    return None


def held_case(flag: dict[str, Any]) -> str | None:
    """``DiagnosticReport/id`` of a case hold, None for a hold on the whole patient."""
    value = extension(flag, CASE_EXTENSION)
    reference = value.get("reference") if isinstance(value, dict) else None
    return reference if isinstance(reference, str) else None


def describe(flag: dict[str, Any]) -> str:
    """The hold as a 409 names it: which Flag, on what, by whom, why."""
    target = held_case(flag) or (flag.get("subject") or {}).get("reference")
    who = (flag.get("author") or {}).get("display") or "unknown"
    reason = extension(flag, REASON_EXTENSION) or "no reason given"
    since = (flag.get("period") or {}).get("start") or "?"
    return f"legal hold Flag/{flag.get('id')} on {target} (placed by {who} at {since}: {reason})"


async def active_holds(reader: TenantReader, patient_ids: set[str]) -> list[dict[str, Any]]:
    """The active legal-hold Flags of these patients (read unbounded: a hold binds every caller)."""
    if not patient_ids:
        return []
    subjects = ",".join(f"Patient/{p}" for p in sorted(patient_ids))
    params = [("subject", subjects), ("_tag", f"{FLAG_SYSTEM}|{LEGAL_HOLD}")]
    request = parse_search(("Flag",), params, lenient=False, default_count=MAX_HOLDS, max_count=MAX_HOLDS)
    flags = [orjson.loads(v.content) for v in await reader.search_versions(request.query) if v.content is not None]
    return [f for f in flags if is_hold(f) and f.get("status") == "active"]


async def hold_on(reader: TenantReader, resource: dict[str, Any]) -> dict[str, Any] | None:
    """The first active hold that keeps ``resource`` from deletion, if any."""
    resource_type, id = resource.get("resourceType"), resource.get("id")
    if is_hold(resource) and resource.get("status") == "active":
        return resource
    for flag in await active_holds(reader, owners(resource)):
        case = held_case(flag)
        if case is None or resource_type == "Patient" or case == f"{resource_type}/{id}":
            return flag
        if f"{resource_type}/{id}" in await _case_evidence(reader, case):
            return flag
    return None


async def check_deletable(
    reader: TenantReader, version: ResourceVersion, may_read: Callable[[dict[str, Any]], bool]
) -> None:
    """409 when an active legal hold keeps this (live) version from deletion, naming the hold to a
    caller that ``may_read`` its Flag."""
    if version.content is None:
        return
    flag = await hold_on(reader, orjson.loads(version.content))
    if flag is not None:
        raise held(f"{version.resource_type}/{version.id}", flag, detailed=may_read(flag))


def held(what: str, flag: dict[str, Any], *, detailed: bool) -> OperationOutcomeError:
    """The 409 of a hold: which Flag, by whom, when and why only to a caller who may read the Flag
    (``detailed``); any other caller learns only that a hold exists."""
    if not detailed:
        return conflict(f"{what} cannot be deleted or erased while under a legal hold")
    return conflict(f"{what} cannot be deleted or erased while under {describe(flag)}")


async def _case_evidence(reader: TenantReader, case: str) -> set[str]:
    """The local references a case DiagnosticReport makes to its evidence (results, images, specimens)."""
    target = parse_local_reference(case)
    version = await reader.read(*target) if target is not None else None
    if version is None or version.content is None:
        return set()
    report: dict[str, Any] = orjson.loads(version.content)
    found: set[str] = set()
    for element in CASE_EVIDENCE:
        for item in report.get(element) or []:
            if isinstance(item, dict) and isinstance(item.get("reference"), str):
                found.add(item["reference"])
    for media in report.get("media") or []:
        link = media.get("link") if isinstance(media, dict) else None
        if isinstance(link, dict) and isinstance(link.get("reference"), str):
            found.add(link["reference"])
    return found
