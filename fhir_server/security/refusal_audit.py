"""Auditing refusals aggregated by a :class:`RefusalTally` (refused token requests, refused sign-ins), so that an
unauthenticated caller cannot append to a tenant's trail at request rate (DICOM PS3.15 A.5.3.11).

The first refusal of a group in its window is audited at once (its event made by the caller); the rest become one
summary event per group when its window closes: a round every quarter window, and at stop (:class:`Periodic`).
Each kind of refusal (``RefusalGroup.kind``) has its summary builder.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fhir_server.audit.events import ENTITY_TYPE
from fhir_server.periodic import Periodic
from fhir_server.security.refusals import RefusalGroup, RefusalSummary, RefusalTally

log = logging.getLogger(__name__)
Event = dict[str, Any]


class RefusalAuditor(Periodic):
    name = "refusal summaries"

    def __init__(self, write: Callable[[str, Event], Awaitable[None]], tally: RefusalTally | None = None) -> None:
        self.tally = tally or RefusalTally()
        super().__init__(self.tally.window / 4)
        self.write = write  # (tenant, event): into that tenant's trail
        self.summaries: dict[str, Callable[[RefusalSummary], Event]] = {}  # kind -> its summary event

    async def refused(self, group: RefusalGroup, reason: str, first: Callable[[RefusalGroup], Event]) -> None:
        """Count a refusal; audit it at once (``first`` of the group it is audited under) when it opens a group."""
        await self.run()  # first: a refusal after its group's window opens a new one
        chosen = self.tally.refused(group, reason)
        if chosen is not None:
            await self.write(chosen.tenant, first(chosen))

    async def run(self, everything: bool = False) -> None:
        """Audit the refusals counted in the windows that have closed (all of them with ``everything``)."""
        for summary in self.tally.due(everything):
            await self.write(summary.group.tenant, self.summaries[summary.group.kind](summary))

    async def stop(self) -> None:
        await super().stop()
        try:
            await self.run(everything=True)
        except Exception:  # shutting down: the rest of the shutdown must still run
            log.exception("could not audit the last refusal summaries")


def summarised(event: Event, summary: RefusalSummary, what: str) -> Event:
    """``event`` (of the group) as the summary of ``summary.count`` more refused ``what`` over their period."""
    group = summary.group
    event["period"] = {"start": summary.start, "end": summary.end}
    event["outcomeDesc"] = f"HTTP {group.status}: {summary.count} more refused {what} (last: {summary.reason})"
    count = {"type": "refused-requests", "valueString": str(summary.count)}
    entity = {"what": {"display": group.client_id}, "type": {"system": ENTITY_TYPE, "code": "2"}, "detail": [count]}
    event["entity"] = [entity]
    return event
