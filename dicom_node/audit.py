"""A DICOM audit trail in the spirit of ATNA (RFC 3881 / DICOM PS3.15 A.5): who, what, when,
from where, and the outcome of every association and DIMSE operation.

Records are appended as JSON lines to ``<data>/audit/dicom.jsonl``. They become FHIR
AuditEvents when the audit trail issue lands.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path


class DicomAudit:
    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "dicom.jsonl"
        self._lock = threading.Lock()

    def record(
        self, *, action: str, outcome: str, calling_ae: str, called_ae: str, peer: str, tenant: str | None,
        detail: str = "",
    ) -> None:  # fmt: skip
        entry = {
            "recorded": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "action": action,
            "outcome": outcome,
            "callingAE": calling_ae,
            "calledAE": called_ae,
            "peer": peer,
            "tenant": tenant,
            "detail": detail,
        }
        line = json.dumps(entry, separators=(",", ":")) + "\n"
        with self._lock, self.path.open("a", encoding="utf-8") as handle:
            handle.write(line)

    def entries(self) -> list[dict[str, str]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line]
