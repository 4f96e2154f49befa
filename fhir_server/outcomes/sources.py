"""Which results ``$ai-performance`` and the drift check may count: those only the server writes.

- An AI risk result (``Observation.code`` in ``urn:dermbridge:ai-risk``) is written by the inference worker
  (``inference.findings``) in a system context; a client's write of one is refused (409), so a client can
  never add, change or withdraw what the model is said to have called.
- A clinician's diagnosis counts when the review queue's ``$complete`` wrote it (``method``
  ``urn:dermbridge:method|clinician-review``, ``fhir_server.workflow.review.decision``), in a system context
  after checking the reviewer; a client's write with that method is refused (409). Who wrote any other
  Observation (a ``patient/`` token or a clinician) is not recorded on it, so no other diagnosis counts.

Both are managed-content rules (``fhir_server.managed_content``: they run for token-bound writes only).
"""

from __future__ import annotations

from typing import Any

from fhir_server.errors import conflict
from fhir_server.outcomes.codes import codings, has_coding

RISK_SYSTEM = "urn:dermbridge:ai-risk"
REVIEW_METHOD = ("urn:dermbridge:method", "clinician-review")  # fhir_server.workflow.review.decision.METHOD


def is_ai_risk(observation: dict[str, Any] | None) -> bool:
    return observation is not None and any(c.get("system") == RISK_SYSTEM for c in codings(observation.get("code")))


def is_review_decision(observation: dict[str, Any] | None) -> bool:
    """A clinician's diagnosis written by the review queue's ``$complete`` (confirm or override)."""
    return observation is not None and has_coding(observation.get("method"), *REVIEW_METHOD)


def is_confirmation(observation: dict[str, Any]) -> bool:
    """A review decision that copied an AI result (``confirm``: ``derivedFrom`` the AI Observation)."""
    return any(
        str((d or {}).get("reference", "")).startswith("Observation/") for d in observation.get("derivedFrom") or []
    )


def server_written_rule(resource: dict[str, Any] | None, before: dict[str, Any] | None) -> None:
    """A managed-content rule on Observation: AI risk results and review decisions are the server's."""
    if is_ai_risk(resource) or is_ai_risk(before):
        raise conflict(
            f"an AI risk result ({RISK_SYSTEM}) is written by the server's inference worker only: "
            "send the image for analysis instead"
        )
    if is_review_decision(resource) or is_review_decision(before):
        raise conflict("a clinician review decision is written by Task/<id>/$complete only")
