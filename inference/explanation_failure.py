"""What the case says when the explanations of committed findings cannot be made.

The worker commits an image's findings first and its explanations (saliency map, dermoscopy ABCD
rule) in a second step (``inference.worker``). When that second step fails on its last attempt, the
findings are committed, searchable and on the case: a record reading "analysis failed" would make a
dermatologist think there are no AI findings. The record says what failed instead: a ``failed`` Task
of its own code (AI explanations), focused on the case, whose ``statusReason`` and OperationOutcome
(severity ``warning``, code ``incomplete``: FHIR R4 valueset-issue-type) say that the explanations are
unavailable and the findings stand. ``DiagnosticReport/{id}/$analyze`` tries the explanations again
(an image whose findings exist is not scored again).
"""

from __future__ import annotations

from typing import Any

from fhir_server.repository import Repository, Stored
from inference.results import FINDING_SYSTEM, ImageContext
from inference.tasks import TASK_SYSTEM, _task, _task_once

AI_EXPLANATIONS_CODE = {"coding": [{"system": TASK_SYSTEM, "code": "ai-explanations",
                                    "display": "AI explanations (saliency map, dermoscopy ABCD rule)"}]}  # fmt: skip
EXPLANATIONS_UNAVAILABLE = "AI explanations unavailable (saliency map, dermoscopy ABCD rule)"
FINDINGS_STAND = "the AI findings of this image were committed and stand"


async def record_explanations_unavailable(repo: Repository, context: ImageContext, reason: str) -> Stored:
    """A failed AI-explanations Task of the case, its output an OperationOutcome (a warning: the
    findings stand), once per image."""
    key = f"explanations-failure-{context.instance_uid}"
    found = await repo.find("Task", [("identifier", f"{FINDING_SYSTEM}|{key}")], 1)
    if found:
        return found[0]
    text = f"{EXPLANATIONS_UNAVAILABLE}: {reason}; {FINDINGS_STAND}"
    outcome: dict[str, Any] = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "warning", "code": "incomplete", "diagnostics": text}],
    }
    stored_outcome = await repo.create(outcome, resource_type="OperationOutcome", server_built=True)
    task = _task(context, "failed", AI_EXPLANATIONS_CODE, text)
    task["businessStatus"] = {"text": "Findings committed; explanations unavailable"}
    reference = {"reference": f"OperationOutcome/{stored_outcome.resource['id']}"}
    task["output"] = [{"type": {"text": "OperationOutcome"}, "valueReference": reference}]
    return await _task_once(repo, task, key)
