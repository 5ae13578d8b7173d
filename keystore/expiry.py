"""Expiry presets (`1h` … `365d`, `never`), durations (`24h`, `7d`) and custom dates."""

import re
from datetime import UTC, date, datetime, time, timedelta

from keytrail.keystore.errors import InvalidKeyRequest
from keytrail.schemas.timestamps import to_utc_millis

EXPIRY_PRESETS: dict[str, timedelta | None] = {
    "1h": timedelta(hours=1),
    "1d": timedelta(days=1),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
    "90d": timedelta(days=90),
    "180d": timedelta(days=180),
    "365d": timedelta(days=365),
    "never": None,
}
"""What `create --expires` accepts besides a custom date."""

RENEW_PERIODS: dict[str, timedelta] = {"30d": timedelta(days=30), "90d": timedelta(days=90)}
"""How far `renew` extends a key."""

_DURATION = re.compile(r"^(\d{1,6})([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str) -> timedelta:
    """`0`, `90s`, `15m`, `24h`, `7d` → timedelta (used for rotation grace periods)."""
    text = text.strip()
    if text == "0":
        return timedelta(0)
    match = _DURATION.match(text)
    if match is None:
        raise InvalidKeyRequest(f"duration {text[:32]!r} is not understood; write it like 0, 15m, 24h or 7d")
    amount, unit = match.groups()
    return timedelta(**{_UNITS[unit]: int(amount)})


def parse_expiry_preset(preset: str) -> timedelta | None:
    """A preset name → its lifetime (None for `never`)."""
    try:
        return EXPIRY_PRESETS[preset.strip().lower()]
    except KeyError:
        choices = ", ".join(EXPIRY_PRESETS)
        raise InvalidKeyRequest(
            f"expiry {preset[:32]!r} is not a preset; use one of {choices} or give a date (YYYY-MM-DD)"
        ) from None


def parse_renew_period(period: str) -> timedelta:
    """`30d` or `90d` → timedelta."""
    try:
        return RENEW_PERIODS[period.strip().lower()]
    except KeyError:
        raise InvalidKeyRequest(f"renew period {period[:32]!r} is not supported; use 30d or 90d") from None


def parse_expiry_date(text: str) -> datetime:
    """A custom expiry: `YYYY-MM-DD` (end of that day, UTC) or an ISO 8601 timestamp with a zone."""
    text = text.strip()
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(23, 59, 59), tzinfo=UTC)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidKeyRequest(
            f"expiry date {text[:40]!r} is not understood; write YYYY-MM-DD or 2026-06-30T12:00:00Z"
        ) from None
    if parsed.tzinfo is None:
        raise InvalidKeyRequest("expiry timestamps need a time zone; add Z for UTC (2026-06-30T12:00:00Z)")
    return to_utc_millis(parsed)


def resolve_expiry(now: datetime, expires_in: str | None, expires_at: datetime | None) -> datetime | None:
    """The absolute expiry for a new key: a custom `expires_at` wins over the `expires_in` preset."""
    if expires_at is not None:
        if expires_at.tzinfo is None:
            raise InvalidKeyRequest("expires_at needs a time zone; pass an aware UTC datetime")
        resolved = to_utc_millis(expires_at)
        if resolved <= now:
            raise InvalidKeyRequest("expires_at is in the past; choose a future date or a preset like 30d")
        return resolved
    if expires_in is None:
        return None
    if expires_in.strip().lower() not in EXPIRY_PRESETS:
        try:
            custom = parse_expiry_date(expires_in)
        except InvalidKeyRequest:
            choices = ", ".join(EXPIRY_PRESETS)
            raise InvalidKeyRequest(
                f"expiry {expires_in[:32]!r} is neither a preset ({choices}) nor a date; "
                "write e.g. 30d or 2026-06-30"
            ) from None
        return resolve_expiry(now, None, custom)
    lifetime = parse_expiry_preset(expires_in)
    return None if lifetime is None else to_utc_millis(now + lifetime)
