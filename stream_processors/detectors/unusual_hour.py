"""Activity at an hour of the week at which the key was never active (after learning)."""

from __future__ import annotations

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
    epoch_day,
    hour_of_week,
    minute_text,
)
from keytrail.stream_processors.detectors.signal_builder import build_signal, clip
from keytrail.stream_processors.detectors.week_counts import (
    EMPTY,
    MAX_WEEKS,
    count_at,
    read_counts,
    with_count,
)
from keytrail.stream_processors.detectors.wording import hour_ranges, plural, weekday_ranges

_RECENT_HOURS = 4


@dataclass(frozen=True, slots=True)
class UnusualHourThresholds:
    learning_days: int = 14
    """Two full weeks: every hour of the week has been seen twice, so a weekly job is already known."""
    surprises_from_day: int = 7
    """From the second week on, activity at a never-seen hour counts as a surprise (fired or not)."""
    regular_days: int = 28
    """Only a key without any surprise for this long is regular enough to be alerted on: a key whose
    timing keeps wandering to new hours stays quiet until it settles."""
    min_active_hours: int = 20
    """A key seen in fewer distinct hours than this has no pattern to break yet."""
    quiet_stretch_hours: int = 6
    """The hour must lie in a stretch of at least this many consecutive never-active hours of the week
    (a night): a single gap in an otherwise busy week is just a quiet hour ..."""
    quiet_day_stretch_hours: int = 24
    """... and, when the key is active at that hour on other days, a stretch of at least a whole day
    (a weekend of a weekday key): sparse weekend evenings of a busy key are not unusual."""
    edge_weeks: int = 2
    """The quiet stretch must have sharp edges: the hours just before and after it were active in at
    least this many weeks. A key whose activity thins out into the night (a light key with a smooth
    daily wave) has no clear quiet hours, and a stray request there is not news."""
    window_hours: int = 6


class UnusualHourDetector:
    """Counts, per hour of the week, the weeks in which the key was active (0..3, 2 bits each).

    An active hour is unusual when that hour of the week and the hours before and after it (so a job
    drifting across a full hour or a daylight-saving shift is not unusual) were never active, it lies
    in a never-active stretch of at least `quiet_stretch_hours` (`quiet_day_stretch_hours` if the key
    is active at that hour on other days) whose edges were active in `edge_weeks` weeks, and the key
    has had no such surprise for `regular_days`.
    Severity: medium when the key was never active at that hour (±1 h) on any day, low when it was
    on other days (e.g. a first Saturday for a weekday key).
    Memory: `f` first day, `p` packed counts, `n` active hours, `a` recent active hours (epoch
    hours), `s` hour of the last surprise, `x` end of the last signalled window.
    """

    name = "unusual_hour"

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
        if not events:
            return []
        memory = state.detector_state.get(self.name)
        if memory is None:
            memory = state.detector_state[self.name] = {
                "f": epoch_day(events[0].occurred_at), "p": EMPTY, "n": 0, "a": [], "s": -1,
            }
        recent: list[int] = memory["a"]
        signals: list[Signal] = []
        previous = None  # the hour of the previous event, which is in `recent` (or older than all of it)
        for event in events:
            at = event.occurred_at
            hour = (at.toordinal() - EPOCH_ORDINAL) * 24 + at.hour  # epoch_hour(at), inlined
            if hour == previous:
                continue  # most events fall in the same hour as the one before
            previous = hour
            if hour in recent or (recent and hour < recent[0]):
                continue  # an hour already counted (or older than the ones we remember: late)
            recent.append(hour)
            recent.sort()
            del recent[:-_RECENT_HOURS]
            signal = self._new_active_hour(key_id, state, memory, event, hour)
            if signal is not None:
                signals.append(signal)
        return signals

    def _new_active_hour(
        self, key_id: str, state: KeyState, memory: dict[str, Any], event: KeyUsageEvent, hour: int
    ) -> Signal | None:
        packed = memory["p"]
        slot = hour_of_week(hour)
        history_days = hour // 24 - memory["f"]
        signal = None
        if (
            history_days >= self.thresholds.surprises_from_day
            and not count_at(packed, (slot - 1) % WEEK_HOURS)
            and not count_at(packed, slot)
            and not count_at(packed, (slot + 1) % WEEK_HOURS)
        ):
            counts = read_counts(packed)
            stretch, edge_weeks = quiet_stretch(counts, slot)
            if (
                stretch >= self.thresholds.quiet_stretch_hours
                and edge_weeks >= self.thresholds.edge_weeks
                and (stretch >= self.thresholds.quiet_day_stretch_hours or not active_at_hour_of_day(counts, slot))
            ):
                last_surprise = memory["s"]
                regular = last_surprise < 0 or hour - last_surprise >= self.thresholds.regular_days * 24
                learnt = (
                    history_days >= self.thresholds.learning_days
                    and memory["n"] >= self.thresholds.min_active_hours
                )
                if learnt and regular:
                    signal = self._signal(key_id, state, memory, counts, event, hour, history_days)
                memory["s"] = hour
        memory["p"] = with_count(packed, slot, min(MAX_WEEKS, count_at(packed, slot) + 1))
        memory["n"] += 1
        return signal

    def _signal(
        self,
        key_id: str,
        state: KeyState,
        memory: dict[str, Any],
        counts: list[int],
        event: KeyUsageEvent,
        hour: int,
        history_days: int,
    ) -> Signal | None:
        at_ms = epoch_ms(event.occurred_at)
        window_start = claim_window(memory, at_ms, self._window_ms)
        if window_start is None:
            return None
        slot = hour_of_week(hour)
        weekday, hour_of_day = divmod(slot, 24)
        active_days = [d for d in range(7) if any(counts[d * 24 : d * 24 + 24])]
        active_hours = [h for h in range(24) if any(counts[d * 24 + h] for d in range(7))]
        never_at_this_hour = not active_at_hour_of_day(counts, slot)
        first, last = (hour_of_day - 1) % 24, (hour_of_day + 2) % 24
        route = f"{event.method} {clip(event.route)}"
        message = (
            f"Key {key_id} was used on {WEEKDAYS[weekday]} {minute_text(at_ms)} from {event.client_ip} "
            f"({route} on {clip(event.service, 60)}); in {plural(history_days, 'day')} it had never been "
            f"active on {WEEKDAYS[weekday]}s between {first:02d}:00 and {last:02d}:00 UTC"
        )
        if never_at_this_hour:
            severity, score = Severity.MEDIUM, 2.0
            message += " nor at that time on any other day"
        else:
            severity, score = Severity.LOW, 1.0
        message += (
            f"; it is usually active {weekday_ranges(active_days)}, {hour_ranges(active_hours)} "
            f"({plural(memory['n'], 'active hour')} so far)."
        )
        return build_signal(
            key_id=key_id,
            project_id=state.project_id,
            kind=SignalKind.UNUSUAL_HOUR,
            severity=severity,
            score=score * min(history_days / self.thresholds.learning_days, 4.0),
            observed=1.0,
            expected=0.0,
            window_start_ms=window_start,
            window_ms=self._window_ms,
            detected_at_ms=at_ms,
            evidence={
                "ips": [event.client_ip],
                "routes": [route],
                "services": [event.service],
                "hours": [f"{WEEKDAYS[weekday]} {hour_of_day:02d}:00 UTC"],
                "usual_days": [weekday_ranges(active_days)],
                "usual_hours": [hour_ranges(active_hours)],
            },
            message=message,
        )


def quiet_stretch(counts: list[int], slot: int) -> tuple[int, int]:
    """The run of never-active hours of the week around `slot`: its length, and the fewest weeks the
    hours just before and after it were active (how sharp its edges are; 0 if the week is empty)."""
    if counts[slot]:
        return 0, 0
    length, edges = 1, []
    for direction in (1, -1):
        step = slot
        while length < WEEK_HOURS:
            step = (step + direction) % WEEK_HOURS
            if counts[step]:
                edges.append(counts[step])
                break
            length += 1
    return length, min(edges, default=0)


def active_at_hour_of_day(counts: list[int], slot: int) -> bool:
    """Whether the key was ever active at this hour of the day (±1 h) on any day of the week."""
    hour_of_day = slot % 24
    return any(
        counts[day * 24 + (hour_of_day + delta) % 24] for day in range(7) for delta in (-1, 0, 1)
    )
