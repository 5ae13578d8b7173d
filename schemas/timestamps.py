"""UTC millisecond timestamps, the one time type of every contract."""

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, PlainSerializer


def to_utc_millis(value: datetime) -> datetime:
    """Reject naive datetimes, convert to UTC and truncate to whole milliseconds."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("timestamp must carry a timezone (use UTC, e.g. 2026-01-01T12:00:00.000Z)")
    value = value.astimezone(UTC)
    return value.replace(microsecond=(value.microsecond // 1000) * 1000)


def format_utc_millis(value: datetime) -> str:
    """ISO 8601 with exactly three fractional digits and a Z suffix."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


UtcMillis = Annotated[
    datetime,
    AfterValidator(to_utc_millis),
    PlainSerializer(format_utc_millis, return_type=str, when_used="json"),
]
"""A timezone-aware datetime normalised to UTC with millisecond precision."""


def utc_now() -> datetime:
    """The current time as a UTC millisecond timestamp."""
    return to_utc_millis(datetime.now(UTC))
