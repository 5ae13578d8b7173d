"""Activity outside the weekly band in which a key has shown a stable working-hours pattern.

Learning is short and rests on evidence, not on a fixed period: once a key has been active on
`min_active_days` days, with at least `min_band_share` of its active hours inside a band of hours
of the day (±1 h) on the weekdays it uses, and the hours outside that band were (nearly) never
active, activity outside the band is flagged: at night (an hour outside the band) or on a day of
the week the key has never used (a weekend for a weekday key). A key used around the clock has no
band and is never flagged; a key whose off-hours activity keeps coming back stays quiet, because
every active hour outside the band counts against the evidence that the band holds.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from keytrail.schemas.signals import Severity, Signal, SignalKind
from keytrail.schemas.usage import KeyUsageEvent
from keytrail.stream_processors.core.clock import epoch_ms
from keytrail.stream_processors.core.state import KeyState, MinuteAggregate
from keytrail.stream_processors.detectors.dedupe import claim_window
from keytrail.stream_processors.detectors.event_time import (
    EPOCH_ORDINAL,
    HOUR_MS,
    WEEK_HOURS,
    WEEKDAYS,
    hour_of_week,
    minute_text,
)
from keytrail.stream_processors.detectors.feedback import DetectorFeedback
from keytrail.stream_processors.detectors.levels import ALPHABET, TOP
from keytrail.stream_processors.detectors.signal_builder import build_signal, clip
from keytrail.stream_processors.detectors.week_counts import (
    EMPTY,
    MAX_WEEKS,
    count_at,
    read_counts,
    with_count,
    write_counts,
)
from keytrail.stream_processors.detectors.wording import hour_ranges, join_names, plural, weekday_ranges

_RECENT_HOURS = 4
_INDEX = {char: index for index, char in enumerate(ALPHABET)}
_EPOCH_WEEKDAY = 3
"""1970-01-01 was a Thursday (0 = Monday)."""
_HOUR_TEXT = re.compile(r"^(Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday) (\d\d):00 UTC$")


@dataclass(frozen=True, slots=True)
class UnusualHourThresholds:
    min_active_days: int = 5
    """A key has a pattern to break once it was active on this many days ..."""
    min_band_share: float = 0.9
    """... with at least this share of its active hours inside its band of hours (±1 h) ..."""
    max_outside_chance: float = 0.02
    """... and the hours outside the band quiet: the estimated chance that such an hour is active
    ((active + ½) / (observed + 1), over every active day) at most this. Off-hours activity that keeps
    coming back raises the estimate, so such a key stays quiet."""
    calm_days: int = 5
    """The key's last this many active days had no activity outside the band (a key that just strayed
    has to settle again before a stray is news)."""
    band_day_share: float = 0.2
    """An hour of the day is in the band when the key was active at it on this share of its active days ..."""
    min_band_days: int = 2
    """... and on at least this many days (one busy day does not make a band)."""
    min_quiet_hours: int = 6
    """Only an hour inside a run of at least this many hours outside the band (a night) is unusual: a
    gap between two busy stretches of the day is a lunch break, not a night."""
    max_off_day_chance: float = 0.25
    """A day of the week the key never used is unusual when the estimated chance that such a day is
    active ((½) / (days of that kind that passed + 1)) is at most this: one quiet weekend day passed is enough."""
    memory_days: int = 56
    """All counts halve when the key's active days reach this: old habits fade over a few months."""
    window_hours: int = 6


@dataclass(frozen=True, slots=True)
class _Band:
    """A key's band as its counts show it now, and how the hour being judged relates to it."""

    active_days: int
    hours: list[int]
    """Hours of the day in the band (taught hours included), before widening by ±1 h."""
    widened: frozenset[int]
    days: list[int]
    """Weekdays the key used (or was taught)."""
    share: float
    active_hours: int
    outside_active: int
    outside_observed: int

    @property
    def outside_chance(self) -> float:
        """The estimated chance that an hour outside the band is active: (active + ½) / (observed + 1)."""
        return (self.outside_active + 0.5) / (self.outside_observed + 1)


class UnusualHourDetector:
    """Per key: on how many active days it was active at each hour of the day (24 counts), per
    weekday how many days it was active and how many passed (7 + 7 counts), on a 0..63 scale.

    Works on the key's minutes (the open ones and those closed in the batch), once per new active
    hour, never per event. Severity: medium at an hour outside the band (the night), low on a day the
    key never used at an hour inside it (a first Saturday of a weekday key). A time of the week (±1 h)
    that was active in an earlier week is never unusual: a weekly job is news once, not every week.
    Memory: `f` first day, `d` last active day, `c` hour-of-day counts, `e` active days and `q` days
    passed per weekday, `p` weeks active per hour of the week (0..3, 2 bits each), `n` active hours, `k` active days since the last hour outside the band, `s`
    that hour, `a` recent active hours (epoch hours), `t`/`u` hours of the day/weekdays taught as
    known (bit masks, present once taught), `x` end of the last signalled window.
    """

    name = "unusual_hour"
    kinds = (SignalKind.UNUSUAL_HOUR.value,)

    def __init__(self, thresholds: UnusualHourThresholds | None = None) -> None:
        self.thresholds = thresholds or UnusualHourThresholds()
        self._window_ms = self.thresholds.window_hours * HOUR_MS

    def observe(
        self,
        key_id: str,
        state: KeyState,
        events: Sequence[KeyUsageEvent],
        closed_minutes: Sequence[tuple[int, MinuteAggregate]],
    ) -> list[Signal]:
        minutes = state.open_minutes
        if not minutes and not closed_minutes:
            return []
        hours = {minute_s // 3600 for minute_s in minutes}
        hours.update(minute_s // 3600 for minute_s, _ in closed_minutes)
        memory = state.detector_state.get(self.name)
        if memory is not None and "c" not in memory:
            memory = state.detector_state[self.name] = upgraded(memory)
        recent: list[int] = memory["a"] if memory is not None else []
        fresh = sorted(h for h in hours if h not in recent and not (recent and h < recent[0]))
        if not fresh:
            return []  # the usual case: hours already counted
        if memory is None:
            memory = state.detector_state[self.name] = new_memory(fresh[0] // 24)
            recent = memory["a"]
        signals: list[Signal] = []
        for hour in fresh:
            recent.append(hour)
            recent.sort()
            del recent[:-_RECENT_HOURS]
            signal = self._new_active_hour(key_id, state, memory, hour, events, closed_minutes)
            if signal is not None:
                signals.append(signal)
        return signals

    def teach(self, state: KeyState, feedback: DetectorFeedback) -> bool:
        """The hours of the day and the weekdays of the signal (its `hours` evidence, else every hour of
        its window) become part of the key's band. Idempotent; True if the band grew."""
        if feedback.kind not in self.kinds:
            return False
        parsed = [_parse_hour(text) for text in feedback.evidence.get("hours", ())]
        slots: list[tuple[int, int]] = [slot for slot in parsed if slot is not None]
        if not slots:
            first = feedback.window_start_ms // HOUR_MS
            last = max(first + 1, -(-feedback.window_end_ms // HOUR_MS))
            slots = [(_weekday(hour // 24), hour % 24) for hour in range(first, min(last, first + 168))]
        memory = state.detector_state.get(self.name)
        if memory is None:
            memory = state.detector_state[self.name] = new_memory(feedback.window_start_ms // (24 * HOUR_MS))
        elif "c" not in memory:
            memory = state.detector_state[self.name] = upgraded(memory)
        hours_mask, days_mask = memory.get("t", 0), memory.get("u", 0)
        for weekday, hour_of_day in slots:
            hours_mask |= 1 << hour_of_day
            days_mask |= 1 << weekday
        changed = hours_mask != memory.get("t", 0) or days_mask != memory.get("u", 0)
        memory["t"], memory["u"] = hours_mask, days_mask
        return changed

    def _new_active_hour(
        self,
        key_id: str,
        state: KeyState,
        memory: dict[str, Any],
        hour: int,
        events: Sequence[KeyUsageEvent],
        closed_minutes: Sequence[tuple[int, MinuteAggregate]],
    ) -> Signal | None:
        limits = self.thresholds
        day, hour_of_day = divmod(hour, 24)
        weekday = _weekday(day)
        hours_text, active_text = memory["c"], memory["e"]
        new_day = day > memory["d"]
        active, passed = _read(active_text), _read(memory["q"])
        if new_day and memory["d"] >= 0:
            _pass_days(passed, memory["d"] + 1, day)  # days since the last active one went by unused

        signal = None
        weeks, slot = memory["p"], hour_of_week(hour)
        weekly = count_at(weeks, (slot - 1) % WEEK_HOURS) or count_at(weeks, slot) or count_at(
            weeks, (slot + 1) % WEEK_HOURS)  # this time of the week (±1 h) was active before: a weekly job
        active_days = sum(active)
        if not weekly and active_days >= limits.min_active_days and not self._plainly_inside(
                memory, hours_text, active, active_days, hour_of_day, weekday, new_day):
            band = self._band(memory, _read(hours_text), active)
            if band is not None:
                hour_chance = self._hour_chance(memory, band, hour_of_day)
                day_chance = self._day_chance(memory, band, active, passed, weekday) if new_day else None
                outside = hour_of_day not in band.widened
                continuing = hour - memory["s"] <= 1  # the same session as the previous hour outside the band
                if (hour_chance is not None or day_chance is not None) and not continuing:
                    signal = self._signal(key_id, state, memory, band, hour, weekday, hour_chance, day_chance,
                                          events, closed_minutes)
                if outside or (new_day and weekday not in band.days):
                    memory["s"] = hour
                if outside:  # the nights are less quiet than they looked: the key has to settle again
                    memory["k"] = -1 if new_day else 0  # counted back to 0 below when it opens a new day

        memory["c"] = _bumped(hours_text, hour_of_day)
        memory["p"] = with_count(weeks, slot, min(MAX_WEEKS, count_at(weeks, slot) + 1))
        memory["n"] += 1
        if new_day:
            passed[weekday] = min(TOP, passed[weekday] + 1)
            active[weekday] = min(TOP, active[weekday] + 1)
            memory["d"] = day
            memory["k"] += 1
            if active_days + 1 >= limits.memory_days:  # old habits fade: every count halves
                active, passed = [value // 2 for value in active], [value // 2 for value in passed]
                memory["c"] = _write([value // 2 for value in _read(memory["c"])])
                memory["p"] = write_counts([value // 2 for value in read_counts(memory["p"])])
            memory["e"], memory["q"] = _write(active), _write(passed)
        return signal

    def _plainly_inside(self, memory: dict[str, Any], hours_text: str, active: list[int], active_days: int,
                        hour_of_day: int, weekday: int, new_day: bool) -> bool:
        """The cheap common case: an hour inside the band (±1 h) on a day the key uses (no band to build)."""
        if new_day and not active[weekday] and not memory.get("u", 0) >> weekday & 1:
            return False
        needed = max(self.thresholds.min_band_days, self.thresholds.band_day_share * active_days)
        taught = memory.get("t", 0)
        for delta in (-1, 0, 1):
            h = (hour_of_day + delta) % 24
            if _INDEX[hours_text[h]] >= needed or taught >> h & 1:
                return True
        return False

    def _band(self, memory: dict[str, Any], hours: list[int], active: list[int]) -> _Band | None:
        """The key's band, if it has shown a stable pattern (`min_active_days`, `min_band_share`)."""
        limits = self.thresholds
        active_days = sum(active)
        if active_days < limits.min_active_days:
            return None
        taught_hours, taught_days = memory.get("t", 0), memory.get("u", 0)
        needed = max(limits.min_band_days, limits.band_day_share * active_days)
        band = [h for h in range(24) if hours[h] >= needed or taught_hours >> h & 1]
        widened = frozenset((h + delta) % 24 for h in band for delta in (-1, 0, 1))
        total = sum(hours)
        inside = sum(hours[h] for h in widened)
        if not band or total == 0 or inside < limits.min_band_share * total:
            return None
        days = [d for d in range(7) if active[d] or taught_days >> d & 1]
        return _Band(active_days, band, widened, days, inside / total, total, total - inside,
                     active_days * (24 - len(widened)))

    def _hour_chance(self, memory: dict[str, Any], band: _Band, hour_of_day: int) -> float | None:
        """The estimated chance that this hour outside the band is active, when that makes it unusual."""
        limits = self.thresholds
        if hour_of_day in band.widened or quiet_run(band.widened, hour_of_day) < limits.min_quiet_hours:
            return None
        if memory["k"] < limits.calm_days:
            return None
        chance = band.outside_chance
        return chance if chance <= limits.max_outside_chance else None

    def _day_chance(self, memory: dict[str, Any], band: _Band, active: list[int], passed: list[int],
                    weekday: int) -> float | None:
        """The estimated chance that a day the key never used is active, when that makes it unusual."""
        limits = self.thresholds
        if weekday in band.days:
            return None
        if longest_quiet_run(band.widened) < limits.min_quiet_hours or band.outside_chance > limits.max_outside_chance:
            return None  # no working-hours pattern (quiet nights): a key busy at any hour is never judged by day
        unused = [d for d in range(7) if d not in band.days]
        observed = sum(passed[d] for d in unused)
        if observed < 1:
            return None  # none of those days has gone by yet: no evidence the key rests on them
        chance = 0.5 / (observed + 1)
        return chance if chance <= limits.max_off_day_chance else None

    def _signal(
        self,
        key_id: str,
        state: KeyState,
        memory: dict[str, Any],
        band: _Band,
        hour: int,
        weekday: int,
        hour_chance: float | None,
        day_chance: float | None,
        events: Sequence[KeyUsageEvent],
        closed_minutes: Sequence[tuple[int, MinuteAggregate]],
    ) -> Signal | None:
        first = _first_event_in(events, hour)
        if first is not None:
            at_ms = epoch_ms(first.occurred_at)
            ip, route, service = first.client_ip, f"{first.method} {clip(first.route)}", first.service
        else:  # no event of that hour in this batch (a minute from the state): the minute's first address
            minute_s, aggregate = _first_minute_in(state, closed_minutes, hour)
            at_ms, ip, route, service = minute_s * 1000, min(aggregate.ips, default=""), "", ""
        window_start = claim_window(memory, at_ms, self._window_ms)
        if window_start is None:
            return None
        hour_of_day = hour % 24
        history_days = hour // 24 - memory["f"] + 1
        usual = f"{weekday_ranges(band.days)}, {hour_ranges(band.hours)}"
        used = f"Key {key_id} was used on {WEEKDAYS[weekday]} {minute_text(at_ms)}"
        if ip:
            used += f" from {ip}"
        if route:
            used += f" ({route} on {clip(service, 60)})"
        history = f"in {plural(history_days, 'day')} ({plural(band.active_days, 'active day')})"
        if hour_chance is not None:
            severity, chance = Severity.MEDIUM, hour_chance
            message = (
                f"{used}, outside its usual hours: {history} it was usually active {usual} "
                f"({band.share:.0%} of its {plural(band.active_hours, 'active hour')}), and "
                f"{'none' if not band.outside_active else f'only {band.outside_active}'} of its "
                f"{band.outside_observed:,} hours outside that band had been active"
            )
            if day_chance is not None:
                message += f", nor had it ever been used on a {WEEKDAYS[weekday]}"
        else:
            severity, chance = Severity.LOW, day_chance or 1.0
            unused = [WEEKDAYS[d] + "s" for d in range(7) if d not in band.days]
            message = (
                f"{used}, a day it does not work: {history} it was usually active {usual} and never on "
                f"{join_names(unused, 7)}"
            )
        return build_signal(
            key_id=key_id,
            project_id=state.project_id,
            kind=SignalKind.UNUSUAL_HOUR,
            severity=severity,
            score=-math.log10(chance),
            observed=1.0,
            expected=chance,
            window_start_ms=window_start,
            window_ms=self._window_ms,
            detected_at_ms=at_ms,
            evidence={
                "ips": [ip] if ip else [],
                "routes": [route] if route else [],
                "services": [service] if service else [],
                "hours": [f"{WEEKDAYS[weekday]} {hour_of_day:02d}:00 UTC"],
                "usual_days": [weekday_ranges(band.days)],
                "usual_hours": [hour_ranges(band.hours)],
            },
            message=message,
        )


def new_memory(first_day: int) -> dict[str, Any]:
    """An empty memory for a key first seen on epoch day `first_day`."""
    return {"f": first_day, "d": -1, "c": "0" * 24, "e": "0" * 7, "q": "0" * 7, "p": EMPTY, "n": 0, "k": 0, "s": -2,
            "a": []}


def upgraded(old: dict[str, Any]) -> dict[str, Any]:
    """A memory written by the previous version (weeks active per hour of the week, `p`), carried over:
    a key that had learnt its hours keeps them instead of learning again."""
    counts = read_counts(old.get("p", EMPTY))
    recent = [hour for hour in old.get("a", []) if isinstance(hour, int)][-_RECENT_HOURS:]
    last_day = recent[-1] // 24 if recent else -1
    first_day = int(old.get("f", last_day if last_day >= 0 else 0))
    weeks = max(0, last_day - first_day + 1) // 7
    active = [max(counts[d * 24 : d * 24 + 24]) for d in range(7)]
    memory = new_memory(first_day)
    memory["c"] = _write([min(TOP, sum(counts[d * 24 + h] for d in range(7))) for h in range(24)])
    memory["e"] = _write([min(TOP, a) for a in active])
    memory["q"] = _write([min(TOP, max(a, weeks)) for a in active])
    memory["d"], memory["a"], memory["n"], memory["p"] = last_day, recent, int(old.get("n", 0)), old.get("p", EMPTY)
    surprise = int(old.get("s", -1))
    memory["k"] = min(TOP, (last_day - surprise // 24) if surprise >= 0 else (last_day - first_day + 1))
    if surprise >= 0:
        memory["s"] = surprise
    if "x" in old:
        memory["x"] = old["x"]
    return memory


def quiet_run(widened: frozenset[int], hour_of_day: int) -> int:
    """How many consecutive hours of the day (wrapping at midnight) outside `widened` hold `hour_of_day`."""
    if hour_of_day in widened:
        return 0
    if not widened:
        return 24
    length = 1
    for direction in (1, -1):
        step = hour_of_day
        while True:
            step = (step + direction) % 24
            if step in widened:
                break
            length += 1
    return length


def longest_quiet_run(widened: frozenset[int]) -> int:
    """The longest run of consecutive hours of the day (wrapping at midnight) outside `widened`."""
    return max((quiet_run(widened, hour) for hour in range(24) if hour not in widened), default=0)


def _weekday(day: int) -> int:
    return (day + _EPOCH_WEEKDAY) % 7


def _read(text: str) -> list[int]:
    return [_INDEX[char] for char in text]


def _write(counts: list[int]) -> str:
    return "".join(ALPHABET[count] for count in counts)


def _bumped(text: str, index: int) -> str:
    """The counts string with one count raised by one (capped)."""
    return text[:index] + ALPHABET[min(TOP, _INDEX[text[index]] + 1)] + text[index + 1 :]


def _pass_days(passed: list[int], first_day: int, end_day: int) -> None:
    """Count the days `first_day` .. `end_day - 1` as gone by, per weekday (capped)."""
    weeks, rest = divmod(max(0, end_day - first_day), 7)
    for offset in range(7):
        weekday = _weekday(first_day + offset)
        passed[weekday] = min(TOP, passed[weekday] + weeks + (1 if offset < rest else 0))


def _parse_hour(text: str) -> tuple[int, int] | None:
    """(weekday, hour of day) from `Wednesday 03:00 UTC`, as the `hours` evidence writes it."""
    match = _HOUR_TEXT.match(str(text))
    if match is None or int(match.group(2)) > 23:
        return None
    return WEEKDAYS.index(match.group(1)), int(match.group(2))


def _first_event_in(events: Sequence[KeyUsageEvent], hour: int) -> KeyUsageEvent | None:
    """The key's first event (in arrival order) in epoch hour `hour`; only looked for when a signal fires."""
    for event in events:
        at = event.occurred_at
        if (at.toordinal() - EPOCH_ORDINAL) * 24 + at.hour == hour:
            return event
    return None


def _first_minute_in(
    state: KeyState, closed_minutes: Sequence[tuple[int, MinuteAggregate]], hour: int
) -> tuple[int, MinuteAggregate]:
    candidates = [(m, a) for m, a in closed_minutes if m // 3600 == hour]
    candidates += [(m, a) for m, a in state.open_minutes.items() if m // 3600 == hour]
    return min(candidates, key=lambda item: item[0])
