"""The case view's sections beyond the findings: the body map, the dermoscopy ABCD results, earlier visits of
the same lesion and the case history. Each read is one FHIR search as the signed-in person (``find``); a
search the person's role may not make (``None``) leaves its section saying so rather than failing the page.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fhir_server.reviewer_app import case_history, dermoscopy
from fhir_server.reviewer_app.body_map import body_map
from fhir_server.reviewer_app.case_view import SALIENCY, Resource, saliency_of
from fhir_server.reviewer_app.earlier_visits import derived_media_ids, earlier_visits

Find = Callable[[str, list[tuple[str, str]]], Awaitable[list[Resource] | None]]
MAX_LESIONS_TRACED = 10  # earlier visits are looked up for this many lesions at most
MAX_IDS = 100


def _refs(kind: str, ids: list[str]) -> str:
    return ",".join(f"{kind}/{i}" for i in ids[:MAX_IDS])


async def sections(
    find: Find, patient: str, task: Resource, report: Resource, observations: list[Resource],
    structures: list[Resource], labels: dict[str, str],
) -> dict[str, Any]:  # fmt: skip
    """What the case page needs for these sections (template variables)."""
    current = {str(r.get("reference") or "") for r in report.get("result") or []}
    visits = await _visits(find, patient, current, structures)
    return {
        "body_map": body_map(structures, labels),
        "abcd": dermoscopy.abcd_by_lesion(observations),
        "visits": visits,
        "history": await _history(find, task, report, current),
    }


async def _visits(find: Find, patient: str, current: set[str], structures: list[Resource]) -> dict[str, Any]:
    traced: dict[str, Any] = {}
    for structure in structures[:MAX_LESIONS_TRACED]:
        lesion = f"BodyStructure/{structure['id']}"
        observations = await find("Observation", [("focus", lesion), ("subject", patient)]) or []
        earlier = [o for o in observations if f"Observation/{o['id']}" not in current]
        media_ids = derived_media_ids(earlier)[:MAX_IDS]
        if not media_ids:
            continue
        media = await find("Media", [("_id", ",".join(media_ids)), ("subject", patient)]) or []
        maps = await find("Media", [("subject", patient), ("modality", "|".join(SALIENCY))]) or []
        found = earlier_visits(lesion, patient, current, earlier, {str(m["id"]): m for m in media}, saliency_of(maps))
        if found:
            traced[lesion] = found
    return traced


async def _history(find: Find, task: Resource, report: Resource, current: set[str]) -> dict[str, Any]:
    case = [f"Task/{task['id']}", f"DiagnosticReport/{report['id']}"]
    provenances = await find("Provenance", [("target", ",".join([*case, *sorted(current)][:MAX_IDS]))]) or []
    events = await find("AuditEvent", [("entity", ",".join(case)), ("_sort", "-date")])
    agents = case_history.agent_references(provenances, events or [])
    named: list[Resource] = []
    for kind in ("Practitioner", "Device"):
        ids = [a.split("/", 1)[1] for a in agents if a.startswith(f"{kind}/")]
        named += (await find(kind, [("_id", ",".join(ids[:MAX_IDS]))]) or []) if ids else []
    names = case_history.agents_named(named)
    return {"entries": case_history.history(provenances, events or [], names), "audit_open": events is not None}
