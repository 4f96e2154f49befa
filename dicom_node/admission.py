"""How many associations the node holds open, and for whom.

Each peer address may hold ``per_peer`` associations of a shared pool of ``max_associations``;
callers whose calling AE title is mapped to a tenant may, once that pool (or their address's share)
is full, take one of ``reserved`` further slots, so that a flood from unmapped callers (or from the
address of a mapped device) cannot starve the devices the node serves. A caller refused a slot is
answered A-ASSOCIATE-RJ, rejected-transient, local-limit-exceeded (PS3.8 §9.3.4).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

ASSOCIATE_RQ_MAX_BYTES = 256 * 1024  # contexts and user identity fit many times over; the header is refused above


@dataclass(frozen=True, slots=True)
class AssociationLimits:
    """The listener's bounds (PS3.8 §9.1.5 ARTIM; §9.3.1 PDU lengths)."""

    max_associations: int = 64  # the shared pool
    per_peer: int = 8  # associations one peer address may hold in the shared pool
    reserved: int = 8  # further slots only for callers mapped to a tenant
    artim_s: float = 10.0  # from connection to a whole A-ASSOCIATE-RQ
    read_timeout_s: float = 30.0  # from a PDU's first byte to its last
    max_pdu: int = 1024 * 1024  # Maximum Length Received we announce; longer PDUs are refused at the header
    pending_per_peer: int = 32  # connections of one address awaiting their A-ASSOCIATE-RQ; the oldest goes first
    max_pending: int = 512  # connections awaiting their A-ASSOCIATE-RQ, all addresses


@dataclass(slots=True)
class Slot:
    peer: str
    reserved: bool
    released: bool = False


class Admission:
    """Counts the open associations per peer address; thread-safe."""

    def __init__(self, limits: AssociationLimits, is_mapped: Callable[[str], bool]) -> None:
        self.limits = limits
        self._is_mapped = is_mapped
        self._lock = threading.Lock()
        self._shared: Counter[str] = Counter()
        self._reserved = 0

    def admit(self, peer: str, calling_ae: str) -> Slot | None:
        """A slot for an association from ``peer`` calling as ``calling_ae``, or None: refuse it."""
        with self._lock:
            if self._shared.total() < self.limits.max_associations and self._shared[peer] < self.limits.per_peer:
                self._shared[peer] += 1
                return Slot(peer, reserved=False)
            if self._reserved < self.limits.reserved and self._is_mapped(calling_ae):
                self._reserved += 1
                return Slot(peer, reserved=True)
        return None

    def release(self, slot: Slot) -> None:
        """The association ended (released, aborted, rejected or dropped); idempotent."""
        with self._lock:
            if slot.released:
                return
            slot.released = True
            if slot.reserved:
                self._reserved -= 1
            else:
                self._shared[slot.peer] -= 1
                if self._shared[slot.peer] <= 0:
                    del self._shared[slot.peer]

    @property
    def open(self) -> int:
        with self._lock:
            return self._shared.total() + self._reserved
