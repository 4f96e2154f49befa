"""The clinician review queue: review Tasks per case and tier, their claims, declines and decisions.

Other packages call :func:`open_review`; clients use the Task operations (``$claim``, ``$release``,
``$decline``, ``$complete``, ``Task/$worklist``) registered by ``fhir_server.workflow.review.operations``.
"""

from fhir_server.workflow.review.policy import urgency_for_risk
from fhir_server.workflow.review.queue import open_review, reopen_review

__all__ = ["open_review", "reopen_review", "urgency_for_risk"]
