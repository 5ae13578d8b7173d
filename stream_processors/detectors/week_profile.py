"""A key's busiest minute per hour of the week and per hour of the day, on a log scale.

Kept as two strings of levels (168 + 24 characters) plus the busiest minute of recent days. Each
slot holds the busiest minute seen in that hour, and drops one level (20 %) each time the hour
comes round quieter — so a weekly job is remembered for weeks, steady growth simply raises the
levels, and traffic that stopped fades out. Empty hours count as quiet ones.
"""

from __future__ import annotations

from typing import Any

from keytrail.stream_processors.detectors.event_time import WEEK_HOURS, hour_of_week
from keytrail.stream_processors.detectors.levels import (
    CEILING,
    level_at,
    level_of,
    lowered,
    peak_level,
    raise_peak,
    with_level,
)

BUSIEST_DECAY_HOURS = 24
"""The key-wide busiest minute drops one level per day."""


def new_profile() -> dict[str, Any]:
    """`w` week levels, `d` day levels, `g` busiest [level, hour], `h` hour being filled, `p` its peak."""
    return {"w": "0" * WEEK_HOURS, "d": "0" * 24, "g": [0, 0], "h": -1, "p": 0}


class WeekProfile:
    """A view over the profile fields of a detector's memory."""

    __slots__ = ("memory",)

    def __init__(self, memory: dict[str, Any]) -> None:
        self.memory = memory

    def expected(self, hour: int) -> tuple[float, float]:
        """(busiest minute usual at this time, ±1 h, by week and by day; busiest minute of recent days)."""
        week, day = self.memory["w"], self.memory["d"]
        slot, hour_of_day = hour_of_week(hour), hour % 24
        level = max(
            level_at(week, (slot - 1) % WEEK_HOURS),
            level_at(week, slot),
            level_at(week, (slot + 1) % WEEK_HOURS),
            level_at(day, (hour_of_day - 1) % 24),
            level_at(day, hour_of_day),
            level_at(day, (hour_of_day + 1) % 24),
        )
        busiest = peak_level(self.memory["g"], hour, BUSIEST_DECAY_HOURS)
        return CEILING[level], CEILING[busiest]

    def add(self, hour: int, value: int) -> None:
        """One closed minute of `hour` with `value`; hours arrive in order (closed minutes do)."""
        filling = self.memory["h"]
        if filling < 0:
            self.memory["h"], self.memory["p"] = hour, value
        elif hour <= filling:
            if value > self.memory["p"]:
                self.memory["p"] = value
        else:
            self._close(filling, self.memory["p"], hour)
            self.memory["h"], self.memory["p"] = hour, value

    def _close(self, hour: int, peak: int, next_hour: int) -> None:
        """Fold the finished `hour` in, and the empty hours up to `next_hour` as quiet ones."""
        week, day = self.memory["w"], self.memory["d"]
        level = level_of(peak)
        slot, hour_of_day = hour_of_week(hour), hour % 24
        week = with_level(week, slot, max(level, level_at(week, slot) - 1))
        day = with_level(day, hour_of_day, max(level, level_at(day, hour_of_day) - 1))
        raise_peak(self.memory["g"], peak, hour, BUSIEST_DECAY_HOURS)
        empty = next_hour - hour - 1
        if empty > 0:
            week = _decay(week, hour_of_week(hour + 1), empty)
            day = _decay(day, (hour + 1) % 24, empty)
        self.memory["w"], self.memory["d"] = week, day


def _decay(text: str, first_slot: int, hours: int) -> str:
    """Each empty hour lowers its slot by one level (a full cycle of `len(text)` hours lowers all)."""
    rounds, rest = divmod(hours, len(text))
    return lowered(lowered(text, 0, len(text), rounds), first_slot, rest, 1)
