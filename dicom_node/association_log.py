"""One log line and the DIMSE metrics of every association (an observer of ``audit.DicomAudit``).

The line (logger ``dicom_node.associations``, INFO, at the association's end or rejection) has the
calling and called AE titles (the DICOM client's id), the tenant, the outcome (released, aborted,
rejected), the duration and the count of each DIMSE operation by outcome; never a UID, a patient's name
or identifier, nor the peer's address. The metrics count associations by outcome and operations (C-STORE
...) by outcome; their labels are fixed words.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter as Tally
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter, Histogram

log = logging.getLogger("dicom_node.associations")
OPERATIONS = frozenset({"C-ECHO", "C-STORE", "C-FIND", "C-GET", "C-MOVE"})
OUTCOMES = frozenset({"accepted", "rejected", "released", "aborted", "success", "failure", "warning", "cancel"})
ENDS = frozenset({"rejected", "released", "aborted"})
MAX_OPEN = 10_000  # associations tracked at once (the admission limits keep far fewer open)

DIMSE_ASSOCIATIONS = Counter("dermbridge_dimse_associations", "DIMSE associations by outcome", ["outcome"])
DIMSE_OPERATIONS = Counter("dermbridge_dimse_operations", "DIMSE operations by outcome", ["operation", "outcome"])
DIMSE_SECONDS = Histogram("dermbridge_dimse_association_duration_seconds", "accepted association to its end",
                          buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))  # fmt: skip


@dataclass(slots=True)
class _Open:
    started: float
    operations: Tally[str] = field(default_factory=Tally)


class AssociationLog:
    """Fed every DICOM audit record (from pynetdicom's threads): counts them, logs each association once."""

    def __init__(self) -> None:
        self._open: dict[str, _Open] = {}
        self._lock = threading.Lock()

    def __call__(self, entry: dict[str, Any]) -> None:
        action, outcome = str(entry.get("action")), _bounded(str(entry.get("outcome")), OUTCOMES)
        peer = str(entry.get("peer"))
        if action != "association":
            DIMSE_OPERATIONS.labels(_bounded(action, OPERATIONS), outcome).inc()
            with self._lock:
                if (current := self._open.get(peer)) is not None:
                    current.operations[f"{action} {outcome}"] += 1
            return
        DIMSE_ASSOCIATIONS.labels(outcome).inc()
        with self._lock:
            if outcome == "accepted":
                if len(self._open) < MAX_OPEN:
                    self._open[peer] = _Open(time.perf_counter())
                return
            if outcome not in ENDS:
                return
            ended = self._open.pop(peer, None)
        seconds = time.perf_counter() - ended.started if ended is not None else 0.0
        if ended is not None:
            DIMSE_SECONDS.observe(seconds)
        self._line(entry, outcome, seconds, ended.operations if ended is not None else Tally())

    @staticmethod
    def _line(entry: dict[str, Any], outcome: str, seconds: float, operations: Tally[str]) -> None:
        fields = {"event": "dicom.association", "calling_ae": entry.get("callingAE"),
                  "called_ae": entry.get("calledAE"), "tenant": entry.get("tenant"), "status": outcome,
                  "duration_ms": round(seconds * 1000, 2), "operations": dict(operations)}  # fmt: skip
        log.info("association %s from AE %s: %s in %.1f ms", outcome, entry.get("callingAE"), dict(operations) or "no "
                 "operation", seconds * 1000, extra={"fields": fields})  # fmt: skip


def _bounded(value: str, known: frozenset[str]) -> str:
    return value if value in known else "other"
