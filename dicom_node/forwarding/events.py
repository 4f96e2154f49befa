"""The outbox events of forwarding: typed seams shared by producer and consumer.

- ``imaging.derived-stored``: appended by ``dicom_node.derived`` in the transaction that stores one of the
  server's own objects (an AI result SR or SEG, a clinician decision SR or KOS), so forwarding never sees an
  object that is not durable, nor misses a stored one.
- ``dicom.forward``: one delivery of one object to one destination, appended by the planner with the job's
  record; the sender claims it, and the outbox's leases and deferrals are its retries and back-off.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

DERIVED_STORED = "imaging.derived-stored"
FORWARD = "dicom.forward"
INSTANCE_STORED = "imaging.instance-stored"

IMAGES, AI_RESULTS, CLINICIAN_DECISIONS = "images", "ai-results", "clinician-decisions"
ObjectKind = Literal["images", "ai-results", "clinician-decisions"]
KINDS: tuple[str, ...] = (IMAGES, AI_RESULTS, CLINICIAN_DECISIONS)
INDETERMINATE = "indeterminate"  # the model called no class (or its call is equivocal)


@dataclass(frozen=True, slots=True)
class DerivedOrigin:
    """What a derived object is and what it was made from, for the tenant's forwarding rules.

    ``kind``: ``ai-results`` or ``clinician-decisions``; ``source``: the SOP Instance UID of the image it was
    derived from ("" when several or none); ``outcome``: the risk tier the model called for that image
    (``indeterminate`` when none), "" when not an AI result."""

    kind: str = AI_RESULTS
    source: str = ""
    outcome: str = ""


@dataclass(frozen=True, slots=True)
class DerivedStored:
    study: str
    series: str
    instance: str
    sop_class: str
    patient: str
    kind: str
    source: str = ""
    outcome: str = ""

    def payload(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, payload: dict[str, Any]) -> DerivedStored:
        return cls(**{name: str(payload.get(name) or "") for name in cls.__dataclass_fields__})


@dataclass(frozen=True, slots=True)
class ForwardRequested:
    """One object to send to one destination (``job``: the key of its state record)."""

    job: str
    destination: str
    instance: str

    def payload(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, payload: dict[str, Any]) -> ForwardRequested:
        return cls(str(payload.get("job", "")), str(payload.get("destination", "")), str(payload.get("instance", "")))
