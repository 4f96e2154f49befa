"""The inference worker's question (DESIGN data flow 2): does this case's flow run AI on this image, and
with which models? Asked before the model runs, so the flow adds no hop in front of the findings.

Routing is by product (the definition is per product), by body site (an ``ai-analysis`` step may name
SNOMED CT sites) and by model (a step may name model keys; none named: every loaded model).
"""

from __future__ import annotations

from typing import Any

from fhir_server.repository import Repository
from fhir_server.workflow.definition import Flow
from fhir_server.workflow.library import FlowLibrary


def site_codes(body_site: dict[str, Any] | None) -> frozenset[str]:
    return frozenset(str(c.get("code")) for c in (body_site or {}).get("coding") or [] if isinstance(c, dict))


def models_for(flow: Flow | None, available: list[str], body_site: dict[str, Any] | None) -> list[str]:
    """Of ``available`` (model keys), those the flow's AI steps route this image to (pure)."""
    if flow is None:
        return []
    sites = site_codes(body_site)
    chosen: list[str] = []
    for step in flow.ai:
        if step.body_sites and not sites & set(step.body_sites):
            continue
        chosen += [key for key in available if (not step.models or key in step.models) and key not in chosen]
    return chosen


async def ai_models(
    library: FlowLibrary, repo: Repository, report_id: str, available: list[str], body_site: dict[str, Any] | None
) -> list[str]:
    """The models to run on an image of the case: none when its flow has no AI analysis (or no flow)."""
    choice = await library.for_case(repo, report_id)
    return models_for(choice.flow, available, body_site)
