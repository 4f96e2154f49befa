"""Whether a credential's ``Period`` covers now (datatypes.html#Period): a role's or a licence's validity.

A date, month or year alone stands for the whole of it: a period that ends on ``2025-12-31`` is valid all that
day, one that starts in ``2026-03`` from its first moment (datatypes.html#dateTime)."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime
from typing import Any

from fhir_server.errors import OperationOutcomeError


def refusal_of(period: Any, what: str, element: str, now: datetime) -> str | None:
    """None when ``period`` (absent: always) covers ``now``; else "<what> expired on ..." or "... starts on ..."."""
    period = period if isinstance(period, dict) else {}
    start = moment(period.get("start"), element, last=False)
    end = moment(period.get("end"), element, last=True)
    if start is not None and start > now:
        return f"{what} starts on {period['start']}"
    if end is not None and end < now:
        return f"{what} expired on {period['end']}"
    return None


def moment(value: Any, element: str, *, last: bool) -> datetime | None:
    """A FHIR dateTime as an instant; a date, month or year alone as its first or ``last`` moment."""
    if not isinstance(value, str) or not value:
        return None
    try:
        if len(value) > 10:
            instant = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return instant if instant.tzinfo is not None else instant.replace(tzinfo=UTC)
        parts = [int(p) for p in value.split("-")]
        if last:
            year, month = parts[0], parts[1] if len(parts) > 1 else 12
            day = parts[2] if len(parts) > 2 else calendar.monthrange(year, month)[1]
            return datetime(year, month, day, 23, 59, 59, 999999, tzinfo=UTC)
        month, day = [*parts[1:], 1, 1][:2]
        return datetime(parts[0], month, day, tzinfo=UTC)
    except (ValueError, IndexError) as exc:
        raise OperationOutcomeError.of(422, "invalid", f"{element} has {value[:40]!r}") from exc
