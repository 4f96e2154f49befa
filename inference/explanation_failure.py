"""What the case says when the explanations of committed findings cannot be made.

The worker commits an image's findings first and its explanations (saliency map, dermoscopy ABCD
rule) in a second step (``inference.worker``). When that second step fails on its last attempt, the
findings are committed, searchable and on the case: a record reading "analysis failed" would make a
dermatologist think there are no AI findings. The record says what failed instead: a ``failed`` Task
of its own code (AI explanations), focused on the case, whose ``statusReason`` and OperationOutcome
(severity ``warning``, code ``incomplete``: FHIR R4 valueset-issue-type) say that the explanations are
unavailable and the findings stand. ``DiagnosticReport/{id}/$analyze`` tries the explanations again
(an image whose findings exist is not scored again). The DICOM SR and SEG of the results
(``inference.dicom_output``) fail the same way: a Task of their own code says so, and the findings stand.
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
AI_DICOM_RESULTS_CODE = {"coding": [{"system": TASK_SYSTEM, "code": "ai-dicom-results",
                                     "display": "AI results as DICOM (structured report, segmentation)"}]}  # fmt: skip
DICOM_RESULTS_UNAVAILABLE = "AI results as DICOM unavailable (structured report, segmentation)"


async def record_explanations_unavailable(repo: Repository, context: ImageContext, reason: str) -> Stored:
    """A failed AI-explanations Task of the case, its output an OperationOutcome (a warning: the
    findings stand), once per image."""
    return await _record_unavailable(repo, context, "explanations", AI_EXPLANATIONS_CODE,
                                     f"{EXPLANATIONS_UNAVAILABLE}: {reason}; {FINDINGS_STAND}",
                                     "Findings committed; explanations unavailable")  # fmt: skip


async def record_dicom_results_unavailable(repo: Repository, context: ImageContext, reason: str) -> Stored:
    """A failed Task of the case saying the DICOM SR/SEG of an image's results could not be made (a warning:
    the findings, in FHIR, stand), once per image."""
    return await _record_unavailable(repo, context, "dicom-results", AI_DICOM_RESULTS_CODE,
                                     f"{DICOM_RESULTS_UNAVAILABLE}: {reason}; {FINDINGS_STAND}",
                                     "Findings committed; DICOM SR/SEG unavailable")  # fmt: skip


async def _record_unavailable(repo: Repository, context: ImageContext, part: str, code: dict[str, Any], text: str,
                              status: str) -> Stored:  # fmt: skip
    key = f"{part}-failure-{context.instance_uid}"
    found = await repo.find("Task", [("identifier", f"{FINDING_SYSTEM}|{key}")], 1)
    if found:
        return found[0]
    outcome: dict[str, Any] = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "warning", "code": "incomplete", "diagnostics": text}],
    }
    stored_outcome = await repo.create(outcome, resource_type="OperationOutcome", server_built=True)
    task = _task(context, "failed", code, text)
    task["businessStatus"] = {"text": status}
    reference = {"reference": f"OperationOutcome/{stored_outcome.resource['id']}"}
    task["output"] = [{"type": {"text": "OperationOutcome"}, "valueReference": reference}]
    return await _task_once(repo, task, key)
