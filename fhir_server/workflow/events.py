"""The outbox events between the inference worker and the workflow engine: frozen dataclasses shared
by producer and consumer (a typed seam, not a dict parsed in two places).

- ``ai.findings-committed``: appended by the worker in the transaction that commits one model's findings
  on one image, so the engine never sees findings that are not durable, nor misses committed ones.
- ``ai.not-analysed``: an image a model did not score (unsuitable for its card, or a failed analysis).
- ``workflow.notification``: what the engine tells subscribers (review opened, discharged, ...), and what a
  reviewer's sign-off tells them (``signed-off``); the subscription worker delivers it to topic-based
  Subscriptions (``fhir_server.subscriptions.topics``) and, for an urgent review, emails the tier's reviewers.
- ``workflow.resumed``: a halted case resumed, or a step retried: the engine runs what is still to do.
- ``resource.created`` (the repository's own event) of a ``DiagnosticReport``: a case the EHR created.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

INSTANCE_STORED = "imaging.instance-stored"
FINDINGS_COMMITTED = "ai.findings-committed"
NOT_ANALYSED = "ai.not-analysed"
NOTIFICATION = "workflow.notification"
RESUMED = "workflow.resumed"
SIGNED_OFF = "signed-off"  # a reviewer's decision made the case final (not a flow's notify event: always sent)
RESOURCE_CREATED = "resource.created"  # the repository's event of every create: a FHIR-created case opens its flow
CASE_OPENED = "workflow.case-opened"  # what the engine makes of a case's creation (never in the outbox)
TOPICS = (INSTANCE_STORED, FINDINGS_COMMITTED, NOT_ANALYSED, RESUMED, RESOURCE_CREATED)


@dataclass(frozen=True, slots=True)
class ClassScore:
    code: str  # SNOMED CT concept of the class
    display: str
    tier: str  # the card's risk tier (melanoma, ..., benign)
    probability: float
    malignant: bool
    threshold: float | None = None  # the card's decision threshold for the class (None: events before it was sent)


@dataclass(frozen=True, slots=True)
class FindingsCommitted:
    report: str
    patient: str
    instance: str
    model: str  # the card's key, id@version
    clinical_use: bool  # the model card allows clinical use
    classes: tuple[ClassScore, ...]
    top: str | None  # the code of the class called (None: no class reached its threshold)
    equivocal: bool  # the call is indeterminate, or no class was called
    lesion: str = ""
    routed: tuple[str, ...] = ()  # every model the flow routed this image to

    def payload(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, payload: dict[str, Any]) -> FindingsCommitted:
        classes = tuple(ClassScore(**c) for c in payload.get("classes") or [])
        return cls(**{**payload, "classes": classes, "routed": tuple(payload.get("routed") or ())})

    @property
    def top_malignant(self) -> float:
        return max((c.probability for c in self.classes if c.malignant), default=0.0)


@dataclass(frozen=True, slots=True)
class NotAnalysed:
    report: str
    patient: str
    instance: str
    kind: str  # "unsuitable" | "failed"
    reason: str
    model: str = ""

    def payload(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, payload: dict[str, Any]) -> NotAnalysed:
        return cls(**payload)


@dataclass(frozen=True, slots=True)
class Notification:
    """``workflow.notification``: delivery is fhir_server.subscriptions' and fhir_server.notify's business."""

    event: str  # one of definition.NOTIFY_EVENTS, or SIGNED_OFF
    report: str
    patient: str
    task: str  # the root Task of the case ("" when the sender does not know it)
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # review-opened: urgency, tier, review (the Task id)
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="milliseconds"))  # when it happened

    def payload(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, payload: dict[str, Any]) -> Notification:
        known = {k: v for k, v in payload.items() if k in cls.__dataclass_fields__}
        return cls(**{**known, "extra": dict(known.get("extra") or {})})
