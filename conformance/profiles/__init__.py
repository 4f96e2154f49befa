"""DermBridge's profiles (StructureDefinitions with a differential and a generated snapshot) of what the
server writes and expects, and the value sets they bind to. ``all_profiles()`` is what the validator
(``fhir_server.profiling``), the CapabilityStatement's ``supportedProfile`` and the IG package use."""

from __future__ import annotations

import copy
import functools
from typing import Any

from conformance.profiles import ai, findings, imaging, value_sets, workflow

BUILDERS = (
    imaging.case_report,
    imaging.lesion,
    imaging.dermoscopic_study,
    imaging.dermoscopic_media,
    findings.ai_risk_result,
    findings.ai_predicted_diagnosis,
    findings.clinician_finding,
    ai.ai_device,
    ai.ai_provenance,
    workflow.ai_analysis_consent,
    workflow.review_task,
)


@functools.cache
def _built() -> tuple[dict[str, Any], ...]:
    return tuple(build() for build in BUILDERS)


def all_profiles() -> list[dict[str, Any]]:
    """Every DermBridge profile, a full StructureDefinition with ``snapshot`` and ``differential`` (copies)."""
    return copy.deepcopy(list(_built()))


def all_value_sets() -> list[dict[str, Any]]:
    """The ValueSets the profiles bind to that the shipped terminology lacks."""
    return value_sets.all_value_sets()
