"""Wiring of outcomes monitoring into the FHIR router and the content rules (called by the composition root)."""

from __future__ import annotations

from fhir_server import managed_content
from fhir_server.api.router import FhirRouter, Operation
from fhir_server.outcomes.dataset import SiteGroup
from fhir_server.outcomes.drift import drift_rule
from fhir_server.outcomes.histology import ground_truth_rule, guard_pathology_report
from fhir_server.outcomes.operation import AI_PERFORMANCE_DEFINITION, AiPerformance
from fhir_server.outcomes.sources import server_written_rule
from fhir_server.write_guards import register_guard


def register_outcomes(router: FhirRouter, site_group: SiteGroup) -> None:
    """``$ai-performance``, the pathology report guard, and the server-managed ground truth and drift alerts."""
    operation = AiPerformance(site_group)
    router.register(Operation("ai-performance", (), False, operation, AI_PERFORMANCE_DEFINITION, False, "r"))
    register_guard("DiagnosticReport", guard_pathology_report)
    managed_content.register("Observation", ground_truth_rule)
    managed_content.register("Observation", server_written_rule)
    managed_content.register("DetectedIssue", drift_rule)
