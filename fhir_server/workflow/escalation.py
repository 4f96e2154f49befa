"""After the AI's findings on one image: a human, a discharge, or nothing more (pure; issue 14,
"confidence-based escalation" and "autonomous discharge").

A human reads the case, even in an AI-only flow, when any malignant-tier probability reaches the flow's
``malignantAbove`` (urgently), when the call is equivocal, or when the image could not be scored. The AI
discharges a case only with a model whose card allows clinical use, and only for a class the definition
names at or above its ``minProbability``; otherwise a flow that reviews only escalations still sends the
case to a human, saying why the AI did not settle it: no case ends unread by mistake.
"""

from __future__ import annotations

from dataclasses import dataclass

from fhir_server.workflow.definition import Flow
from fhir_server.workflow.events import ClassScore, FindingsCommitted

REVIEW, DISCHARGE, SIGN_OFF = "review", "discharge", "sign-off"


@dataclass(frozen=True, slots=True)
class Verdict:
    action: str  # REVIEW (escalated), DISCHARGE (the AI may settle it), SIGN_OFF (routine review)
    reason: str
    urgent: bool = False
    risk: str | None = None  # the risk tier of the class that escalated it (the review's urgency follows it)

    @property
    def escalated(self) -> bool:
        return self.action == REVIEW


def judge(flow: Flow, findings: FindingsCommitted) -> Verdict:
    """What the flow does with one model's findings on one image."""
    escalation = flow.escalation
    malignant = findings.top_malignant
    if escalation is not None and malignant >= escalation.malignant_above:
        worst = max((c for c in findings.classes if c.malignant), key=lambda c: c.probability)
        reason = (f"escalated: {worst.display} probability {malignant:.2f} is at or above this flow's escalation "
                  f"threshold {escalation.malignant_above:.2f}{_below_decision(worst)} ({findings.model})")  # fmt: skip
        return Verdict(REVIEW, reason, True, worst.tier)
    if escalation is not None and escalation.equivocal and findings.equivocal:
        return Verdict(REVIEW, f"escalated: the AI's call is equivocal ({findings.model})")
    why_not = _why_not_discharged(flow, findings)
    if why_not is None:
        top = next(c for c in findings.classes if c.code == findings.top)
        return Verdict(DISCHARGE, f"discharged by the AI: {top.display} probability {top.probability:.2f} "
                       f"({findings.model})")  # fmt: skip
    if flow.review is not None and flow.review.when == "always":
        return Verdict(SIGN_OFF, f"clinician sign-off of the AI's findings ({findings.model})")
    return Verdict(REVIEW, f"escalated: the AI cannot settle this case: {why_not}")


def _below_decision(score: ClassScore) -> str:
    """The model's own reading, when the escalation threshold is lower than the card's decision threshold:
    the result then reads negative while the case is escalated, and the reviewer must see why."""
    if score.threshold is None or score.probability >= score.threshold:
        return ""
    return f", under the model's decision threshold {score.threshold:.2f} (the AI result reads negative)"


def _why_not_discharged(flow: Flow, findings: FindingsCommitted) -> str | None:
    discharge = flow.discharge
    if discharge is None:
        return "this flow has no autonomous discharge"
    if not findings.clinical_use:
        return f"the model card of {findings.model} does not allow clinical use"
    top = next((c for c in findings.classes if c.code == findings.top), None)
    if top is None or top.code not in discharge.classes:
        return "the AI's call is not a class this flow may discharge"
    if top.probability < discharge.min_probability:
        return f"{top.display} probability {top.probability:.2f} is under {discharge.min_probability:.2f}"
    return None
