"""What the soak wrote and what the server answered: the ledger ``bench/soak.py`` verifies at the end.

A write is *acknowledged* when the server answered it (2xx, or DIMSE Success 0x0000): the ledger
keeps what it answered (id, versionId, SOP Instance UID). A write in flight when the server was
killed got no answer: its outcome is *unknown* (it may or may not have committed). Every FHIR write
carries a marker of its own (an identifier ``urn:soak:write|<marker>``), so that an unknown write
can be looked for afterwards: one that committed must be as audited as an acknowledged one.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

WRITE_SYSTEM = "urn:soak:write"  # one value per write: which write a version holds
KEY_SYSTEM = "urn:soak:key"  # a conditional create's key (If-None-Exist)
ACKED, UNKNOWN = "acknowledged", "unknown"


@dataclass
class Write:
    """One write request and its outcome."""

    kind: str  # create | conditional | update | delete | transaction | c-store
    resource_type: str
    marker: str  # the write's marker (FHIR) or SOP Instance UID (DICOM)
    outcome: str  # ACKED or UNKNOWN
    ref: str | None = None  # Type/id once known (a create's id comes with its answer)
    version: int | None = None  # the acknowledged versionId
    study: str = ""  # a C-STORE's Study Instance UID
    group: str = ""  # a transaction's entries share one


@dataclass
class Resource:
    """A resource one client owns: only that client writes it, one request at a time."""

    ref: str
    version: int
    body: dict[str, Any]
    deleted: bool = False
    uncertain: bool = False  # a write on it got no answer: no further writes (its version is unknown)


@dataclass
class Ledger:
    writes: list[Write] = field(default_factory=list)
    resources: dict[str, Resource] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)  # conditional-create key -> the ref answered for it
    unexpected: Counter[str] = field(default_factory=Counter)  # "POST Observation -> 500" and the like
    examples: list[str] = field(default_factory=list)  # the first few unexpected answers, in full
    not_sent: int = 0  # requests refused at connect (the server was down): never reached it
    reads: int = 0
    searches: int = 0

    def acked(self, write: Write) -> None:
        write.outcome = ACKED
        self.writes.append(write)

    def unknown(self, write: Write) -> None:
        write.outcome = UNKNOWN
        self.writes.append(write)
        if write.ref in self.resources:
            self.resources[write.ref].uncertain = True

    def odd(self, what: str, detail: str) -> None:
        self.unexpected[what] += 1
        if len(self.examples) < 10:
            self.examples.append(f"{what}: {detail[:300]}")

    def counts(self, outcome: str) -> Counter[str]:
        return Counter(w.kind for w in self.writes if w.outcome == outcome)
