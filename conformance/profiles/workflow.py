"""Profiles of the workflow's resources: the Consent the AI analysis needs (``fhir_server.consent``) and
the clinician review Task (``fhir_server.workflow.review``)."""

from __future__ import annotations

from typing import Any

from conformance.profiles.builder import element, invariant, profile, reference, sliced
from fhir_server import declared_profiles as urls
from fhir_server.workflow.review.codes import IDENTIFIER_SYSTEM, REVIEW_CODE, STATE_SYSTEM, TASK_SYSTEM, TIER_SYSTEM


def ai_analysis_consent() -> dict[str, Any]:
    return profile(
        urls.AI_ANALYSIS_CONSENT,
        "Consent",
        "DermBridge AI-analysis consent",
        "A patient's Consent as DermBridge reads it before analysing their images: the patient, a root provision "
        "whose type is the base policy (permit or deny), and purposes of use (ai-analysis, or those the tenant maps "
        "to it, e.g. v3 TREAT) on that provision or nested exceptions. No applicable Consent means no analysis.",
        [
            element("Consent.patient", min=1, type=reference("Patient")),
            element("Consent.provision", min=1),
            element("Consent.provision.type", min=1),
        ],
        constraints=(
            invariant("dbr-consent-1", "The Consent names a purpose of use, on its provision or a nested one",
                      "(provision | provision.repeat(provision)).purpose.exists()"),
        ),
    )  # fmt: skip


def review_task() -> dict[str, Any]:
    return profile(
        urls.REVIEW_TASK,
        "Task",
        "DermBridge clinician review",
        "A case waiting for (or under) a clinician's review: its tier, its queue state (businessStatus), its "
        "urgency (priority) and due date, the case (focus) and the patient.",
        [
            sliced("Task.identifier", "value", "system", min=1),
            element("Task.identifier:review", min=1, max="1"),
            element("Task.identifier:review.system", min=1, fixedUri=IDENTIFIER_SYSTEM),
            element("Task.identifier:review.value", min=1),
            element("Task.businessStatus", min=1),
            sliced("Task.businessStatus.coding", "value", "system", min=1),
            element("Task.businessStatus.coding:state", min=1, max="1"),
            element("Task.businessStatus.coding:state.system", min=1, fixedUri=STATE_SYSTEM),
            element("Task.intent", fixedCode="order"),
            element("Task.priority", min=1),
            element("Task.code", min=1),
            sliced("Task.code.coding", "value", "system", min=2),
            element("Task.code.coding:review", min=1, max="1", patternCoding={"system": TASK_SYSTEM,
                                                                               "code": REVIEW_CODE}),
            element("Task.code.coding:review.system", fixedUri=TASK_SYSTEM),
            element("Task.code.coding:tier", min=1, max="1"),
            element("Task.code.coding:tier.system", min=1, fixedUri=TIER_SYSTEM),
            element("Task.focus", min=1, type=reference("DiagnosticReport")),
            element("Task.for", min=1, type=reference("Patient")),
            element("Task.authoredOn", min=1),
        ],
    )  # fmt: skip
