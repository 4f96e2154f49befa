"""Search values as the index stores them: normalised strings, dates and numbers as ranges."""

from __future__ import annotations

import calendar
import re
import time
import unicodedata
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

# Open ends of periods and ranges.
MIN_TS = -1.0e15
MAX_TS = 1.0e15

_DATE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?P<f>\.\d+)?)?(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


def normalize(text: str) -> str:
    """Case- and accent-insensitive form for string search (search.html#string)."""
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(stripped.casefold().split())


def date_range(text: str) -> tuple[float, float] | None:
    """A FHIR date, dateTime or instant as the range [low, high) of its precision, epoch seconds."""
    m = _DATE.match(text.strip())
    if m is None:
        return None
    try:
        year = int(m["y"])
        if m["m"] is None:
            return _ts(datetime(year, 1, 1, tzinfo=UTC)), _ts(_add_years(year, 1))
        month = int(m["m"])
        if m["d"] is None:
            start = datetime(year, month, 1, tzinfo=UTC)
            days = calendar.monthrange(year, month)[1]
            return _ts(start), _ts(start + timedelta(days=days))
        day = int(m["d"])
        if m["H"] is None:
            start = datetime(year, month, day, tzinfo=UTC)
            return _ts(start), _ts(start + timedelta(days=1))
        offset = _offset(m["tz"])
        start = datetime(year, month, day, int(m["H"]), int(m["M"]), tzinfo=UTC) - offset
        if m["S"] is None:
            return _ts(start), _ts(start + timedelta(minutes=1))
        start += timedelta(seconds=int(m["S"]))
        if m["f"] is None:
            return _ts(start), _ts(start + timedelta(seconds=1))
        fraction = m["f"][1:]
        unit = 10.0 ** -len(fraction)
        low = _ts(start) + int(fraction) * unit
        return low, low + unit
    except ValueError:
        return None


def _add_years(year: int, n: int) -> datetime:
    return datetime(year + n, 1, 1, tzinfo=UTC) if year + n <= 9999 else datetime(9999, 12, 31, tzinfo=UTC)


def _offset(tz: str | None) -> timedelta:
    if tz is None or tz == "Z":
        return timedelta(0)
    sign = -1 if tz[0] == "-" else 1
    hours, minutes = int(tz[1:3]), int(tz[4:6])
    return sign * timedelta(hours=hours, minutes=minutes)


def _ts(moment: datetime) -> float:
    return calendar.timegm(moment.utctimetuple()) + moment.microsecond / 1e6


def approximate(low: float, high: float, fraction: float = 0.1, now: float | None = None) -> tuple[float, float]:
    """The ``ap`` prefix: widen by 10% of the distance from now (dates) or of the value (numbers)."""
    if now is not None:
        delta = max(abs(now - low), abs(now - high)) * fraction
    else:
        delta = max(abs(low), abs(high)) * fraction
    return low - delta, high + delta


def now_ts() -> float:
    return time.time()


def decimal_range(text: str) -> tuple[float, float, float] | None:
    """A number with its implicit precision range (search.html#number): "100" is [99.5, 100.5)."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    exponent = value.as_tuple().exponent
    half = Decimal(5) * Decimal(10) ** (int(exponent) - 1)
    return float(value - half), float(value + half), float(value)


def as_number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float | Decimal):
        return float(value)
    return None
