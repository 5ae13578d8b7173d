"""Event time as the detectors read it: days, hours of the week, and how a moment is written in a message.

Detectors never look at a wall clock: every "now" is the time of an event or of a closed minute,
so a replay of the same events reproduces the same signals.
"""

from __future__ import annotations

from datetime import datetime

from keytrail.schemas.timestamps import format_utc_millis
from keytrail.stream_processors.core.clock import from_epoch_ms

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
WEEK_HOURS = 168
EPOCH_ORDINAL = 719_163
"""`date(1970, 1, 1).toordinal()`: day numbers below count days since the Unix epoch."""
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_EPOCH_WEEKDAY = 3
"""1970-01-01 was a Thursday."""


def epoch_day(moment: datetime) -> int:
    """Days since the Unix epoch of a UTC datetime (cheap: no arithmetic on datetimes)."""
    return moment.toordinal() - EPOCH_ORDINAL


def epoch_hour(moment: datetime) -> int:
    """Hours since the Unix epoch of a UTC datetime."""
    return (moment.toordinal() - EPOCH_ORDINAL) * 24 + moment.hour


def hour_of_week(hour: int) -> int:
    """0 = Monday 00:00-01:00 UTC ... 167 = Sunday 23:00-24:00 UTC, from hours since the epoch."""
    return (hour + _EPOCH_WEEKDAY * 24) % WEEK_HOURS


def window_of(ms: int, window_ms: int) -> int:
    """Start of the aligned window (multiples of `window_ms` since the epoch) holding `ms`."""
    return ms - ms % window_ms


def minute_text(ms: int) -> str:
    """`2026-11-02 09:14 UTC`."""
    return from_epoch_ms(ms).strftime("%Y-%m-%d %H:%M UTC")


def day_text(ms: int) -> str:
    """`Monday 2026-11-02`."""
    moment = from_epoch_ms(ms)
    return f"{WEEKDAYS[moment.weekday()]} {moment:%Y-%m-%d}"


def iso_text(ms: int) -> str:
    """The contract's timestamp form, used in signal ids."""
    return format_utc_millis(from_epoch_ms(ms))
