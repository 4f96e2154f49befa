"""The codes a workflow definition and its Task tree use (a DermBridge CodeSystem, ``urn:dermbridge:workflow-step``).

PlanDefinition: http://hl7.org/fhir/R4/plandefinition.html; Task: http://hl7.org/fhir/R4/task.html.
"""

from __future__ import annotations

from typing import Any

STEP_SYSTEM = "urn:dermbridge:workflow-step"
PRODUCT_SYSTEM = "urn:dermbridge:product"
WORKFLOW_SYSTEM = "urn:dermbridge:workflow"  # identifiers of the Task tree (deterministic per case and step)
USAGE_CONTEXT_TYPE = "http://terminology.hl7.org/CodeSystem/usage-context-type"
PLAN_TYPE = "http://terminology.hl7.org/CodeSystem/plan-definition-type"
FHIRPATH = "text/fhirpath"

CONSENT_GATE = "consent-gate"
AI_ANALYSIS = "ai-analysis"
ESCALATION = "escalation"
HUMAN_REVIEW = "human-review"
DISCHARGE = "autonomous-discharge"
NOTIFY = "notify"
STORE_ONLY = "store-only"
CASE = "case"  # the root Task of a case's tree

STEP_DISPLAY = {
    CONSENT_GATE: "Consent gate",
    AI_ANALYSIS: "AI analysis",
    ESCALATION: "Confidence-based escalation",
    HUMAN_REVIEW: "Human review",
    DISCHARGE: "Autonomous discharge",
    NOTIFY: "Notification",
    STORE_ONLY: "Store only",
    CASE: "Case workflow",
}
STEPS = frozenset(STEP_DISPLAY) - {CASE}

CODE_SYSTEM: dict[str, Any] = {
    "resourceType": "CodeSystem",
    "url": STEP_SYSTEM,
    "name": "DermBridgeWorkflowStep",
    "status": "active",
    "content": "complete",
    "caseSensitive": True,
    "concept": [{"code": code, "display": display} for code, display in STEP_DISPLAY.items()],
}


def step_code(step: str) -> dict[str, Any]:
    return {"coding": [{"system": STEP_SYSTEM, "code": step, "display": STEP_DISPLAY[step]}]}


def product_context(product: str) -> dict[str, Any]:
    """The ``useContext`` that ties a definition to a product (usage-context-type ``program``)."""
    return {
        "code": {"system": USAGE_CONTEXT_TYPE, "code": "program"},
        "valueCodeableConcept": {"coding": [{"system": PRODUCT_SYSTEM, "code": product}]},
    }
