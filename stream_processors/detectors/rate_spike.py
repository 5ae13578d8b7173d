"""A rate spike: a minute with far more requests than the key makes at that time of the week."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from keytrail.schemas.signals import Severity, Signal, SignalKind
from keytrail.schemas.usage import KeyUsageEvent
from keytrail.stream_processors.core.state import OUTCOME_ORDER, KeyState, MinuteAggregate
from keytrail.stream_processors.detectors.dedupe import claim_window
from keytrail.stream_processors.detectors.event_time import (
    DAY_MS,
    HOUR_MS,
    MINUTE_MS,
    WEEKDAYS,
    hour_of_week,
    minute_text,
)
from keytrail.stream_processors.detectors.networks import networks_with_counts
from keytrail.stream_processors.detectors.signal_builder import build_signal
from keytrail.stream_processors.detectors.week_profile import WeekProfile, new_profile
from keytrail.stream_processors.detectors.wording import count_text


@dataclass(frozen=True, slots=True)
class RateSpikeThresholds:
    factor: float = 3.0
    """A minute must exceed this × the busiest minute usual at that time (hour of week or of day, ±1 h) ..."""
    min_requests: int = 30
    """... and have at least this many requests ..."""
    busiest_share: float = 1.0
    """... and exceed this share of the key's busiest minute of recent days (at any hour)."""
    severe_score: float = 3.0
    """Observed / threshold at which the spike is high severity."""
    learning_days: int = 7
    """One full week: every hour of the week has been seen once (a weekly job included)."""
    window_minutes: int = 60


class RateSpikeDetector:
    """Judges each closed minute against the key's week profile (see `week_profile`), then learns it.

    Works on closed minutes (complete counts, whatever the batching), so a spike is reported once the
    minute is past the allowed lateness. Memory: the week profile plus `f` first minute and `x`.
    """

    name = "rate_spike"

    def __init__(self, thresholds: RateSpikeThresholds | None = None) -> None:
        self.thresholds = thresholds or RateSpikeThresholds()
        self._window_ms = self.thresholds.window_minutes * MINUTE_MS
        self._learning_ms = self.thresholds.learning_days * DAY_MS

    def observe(
        self,
        key_id: str,
        state: KeyState,
        events: Sequence[KeyUsageEvent],
        closed_minutes: Sequence[tuple[int, MinuteAggregate]],
    ) -> list[Signal]:
        if not closed_minutes:
            return []
        memory = state.detector_state.get(self.name)
        if memory is None:
            memory = state.detector_state[self.name] = new_profile() | {"f": closed_minutes[0][0] * 1000}
        profile = WeekProfile(memory)
        limits = self.thresholds
        learnt_from = memory["f"] + self._learning_ms
        signals: list[Signal] = []
        for minute_s, aggregate in closed_minutes:
            minute_ms = minute_s * 1000
            hour = minute_ms // HOUR_MS
            requests = aggregate.requests
            if requests >= limits.min_requests and minute_ms >= learnt_from:
                usual, busiest = profile.expected(hour)
                threshold = max(limits.min_requests, limits.factor * usual, limits.busiest_share * busiest)
                if requests >= threshold:
                    window_start = claim_window(memory, minute_ms, self._window_ms)
                    if window_start is not None:
                        signals.append(
                            self._signal(key_id, state, minute_ms, aggregate, usual, busiest, threshold, window_start)
                        )
            profile.add(hour, requests)
        return signals

    def _signal(
        self,
        key_id: str,
        state: KeyState,
        minute_ms: int,
        aggregate: MinuteAggregate,
        usual: float,
        busiest: float,
        threshold: float,
        window_start: int,
    ) -> Signal:
        requests = aggregate.requests
        score = requests / threshold
        severity = Severity.HIGH if score >= self.thresholds.severe_score else Severity.MEDIUM
        weekday, hour_of_day = divmod(hour_of_week(minute_ms // HOUR_MS), 24)
        when = f"{WEEKDAYS[weekday]}s around {hour_of_day:02d}:00 UTC"
        norm = (
            f"on {when} its busiest minute is usually about {count_text(usual)} requests"
            if usual > 0 else f"it is usually idle on {when}"
        )
        ratio = f", {requests / usual:.0f}× that" if usual > 0 else ""
        ips = sorted(aggregate.ips)
        message = (
            f"Key {key_id} made {count_text(requests)} requests in the minute starting {minute_text(minute_ms)} "
            f"from {len(ips)} IP address{'es' if len(ips) != 1 else ''}; {norm}{ratio}, and its busiest "
            f"minute in recent days was about {count_text(busiest)} (alert threshold {count_text(threshold)})."
        )
        return build_signal(
            key_id=key_id,
            project_id=state.project_id,
            kind=SignalKind.RATE_SPIKE,
            severity=severity,
            score=score,
            observed=float(requests),
            expected=usual,
            window_start_ms=window_start,
            window_ms=self._window_ms,
            detected_at_ms=minute_ms + MINUTE_MS,
            evidence={
                "minutes": [minute_text(minute_ms)],
                "ips": ips[:10],
                "networks": networks_with_counts(ips, 5),
                "outcomes": [f"{name}={n}" for name, n in _outcome_counts(aggregate) if n],
            },
            message=message,
        )


def _outcome_counts(aggregate: MinuteAggregate) -> list[tuple[str, int]]:
    return [(outcome.value, count) for outcome, count in zip(OUTCOME_ORDER, aggregate.outcomes, strict=True)]
