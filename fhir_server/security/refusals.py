"""Which refused token requests reach the audit trail, so that unauthenticated callers cannot
flood a tenant's trail (DICOM PS3.15 A.5.3.11 "User Authentication" events, aggregated).

Refusals are grouped per window by (tenant, client id or username, address, HTTP status, kind). The first refusal
of a group in its window is audited at once, with its reason; the rest are counted, and when the
window closes one AuditEvent records how many there were and over which period. A tenant has at
most ``groups_per_tenant`` groups per window; further refusals join one overflow group of that
tenant. So a tenant gets at most ``2 * (groups_per_tenant + 1)`` refusal events per status per
window, and memory stays bounded by the number of tenants.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

WINDOW_SECONDS = 60.0
GROUPS_PER_TENANT = 20
OVERFLOW = "(several)"


@dataclass(frozen=True, slots=True)
class RefusalGroup:
    tenant: str
    client_id: str  # the client id of a token request, the username typed at a sign-in
    address: str
    status: int
    kind: str = "token"  # or "sign-in"


@dataclass(frozen=True, slots=True)
class RefusalSummary:
    """Refusals of one group after its first, to be audited as one event."""

    group: RefusalGroup
    count: int
    start: str  # ISO 8601 instants of the first and last counted refusal
    end: str
    reason: str  # the last one's


@dataclass(slots=True)
class _Tally:
    opened: float  # clock time the window opened
    count: int = 0
    start: str = ""
    end: str = ""
    reason: str = ""


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class RefusalTally:
    """Counts refused token requests per group and window; says which to audit at once."""

    def __init__(
        self,
        window: float = WINDOW_SECONDS,
        groups_per_tenant: int = GROUPS_PER_TENANT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window, self.groups_per_tenant, self.clock = window, groups_per_tenant, clock
        self._open: dict[RefusalGroup, _Tally] = {}
        self._groups_of: dict[str, int] = {}  # tenant -> its open groups

    def refused(self, group: RefusalGroup, reason: str) -> RefusalGroup | None:
        """The group to audit this refusal under now, or None when it is only counted."""
        tally = self._open.get(group)
        if tally is None and self._groups_of.get(group.tenant, 0) >= self.groups_per_tenant:
            group = RefusalGroup(group.tenant, OVERFLOW, OVERFLOW, group.status, group.kind)
            tally = self._open.get(group)
        if tally is None:
            self._open[group] = _Tally(self.clock())
            self._groups_of[group.tenant] = self._groups_of.get(group.tenant, 0) + 1
            return group
        now = _now_iso()
        tally.count += 1
        tally.start = tally.start or now
        tally.end, tally.reason = now, reason
        return None

    def due(self, everything: bool = False) -> list[RefusalSummary]:
        """Close the windows that have ended (all with ``everything``): the summaries to audit."""
        now = self.clock()
        closing = [g for g, t in self._open.items() if everything or now - t.opened >= self.window]
        summaries = []
        for group in closing:
            tally = self._open.pop(group)
            self._groups_of[group.tenant] -= 1
            if not self._groups_of[group.tenant]:
                del self._groups_of[group.tenant]
            if tally.count:
                summaries.append(RefusalSummary(group, tally.count, tally.start, tally.end, tally.reason))
        return summaries
