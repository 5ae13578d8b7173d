"""Many distinct client IPs at once: a minute with far more addresses than the key's norm."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from keytrail.schemas.signals import Severity, Signal, SignalKind
from keytrail.schemas.usage import KeyUsageEvent
from keytrail.stream_processors.core.state import KeyState, MinuteAggregate
from keytrail.stream_processors.detectors.dedupe import claim_window
from keytrail.stream_processors.detectors.event_time import DAY_MS, HOUR_MS, MINUTE_MS, minute_text
from keytrail.stream_processors.detectors.levels import CEILING, level_of, peak_level, raise_peak
from keytrail.stream_processors.detectors.networks import networks_with_counts
from keytrail.stream_processors.detectors.signal_builder import build_signal
from keytrail.stream_processors.detectors.wording import count_text


@dataclass(frozen=True, slots=True)
class ManyIpsThresholds:
    factor: float = 3.0
    """A minute must have more than this × the key's usual busiest minute (in distinct IPs) ..."""
    min_ips: int = 10
    """... and at least this many distinct IPs."""
    decay_days: int = 7
    """The remembered busiest minute drops one level (20 %) per week it is not matched, so a weekly
    job's fleet is still remembered the next week."""
    severe_score: float = 3.0
    learning_days: int = 7
    window_minutes: int = 60


class ManyIpsDetector:
    """Judges each closed minute's distinct IPs against the key's decaying busiest minute, then learns it.

    Memory: `g` [level, hour] busiest minute in distinct IPs, `f` first minute, `x`.
    """

    name = "many_ips"

    def __init__(self, thresholds: ManyIpsThresholds | None = None) -> None:
        self.thresholds = thresholds or ManyIpsThresholds()
        self._window_ms = self.thresholds.window_minutes * MINUTE_MS
        self._learning_ms = self.thresholds.learning_days * DAY_MS
        self._decay_hours = self.thresholds.decay_days * 24

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
            memory = state.detector_state[self.name] = {"g": [0, 0], "f": closed_minutes[0][0] * 1000}
        limits = self.thresholds
        peak: list[int] = memory["g"]
        learnt_from = memory["f"] + self._learning_ms
        signals: list[Signal] = []
        for minute_s, aggregate in closed_minutes:
            minute_ms = minute_s * 1000
            hour = minute_ms // HOUR_MS
            distinct = len(aggregate.ips)
            if distinct >= limits.min_ips and minute_ms >= learnt_from:
                usual = CEILING[peak_level(peak, hour, self._decay_hours)]
                threshold = max(limits.min_ips, limits.factor * usual)
                if distinct >= threshold:
                    window_start = claim_window(memory, minute_ms, self._window_ms)
                    if window_start is not None:
                        signals.append(self._signal(key_id, state, minute_ms, aggregate, usual, threshold, window_start))
            if distinct and (level_of(distinct) >= peak[0] or hour - peak[1] >= self._decay_hours):
                raise_peak(peak, distinct, hour, self._decay_hours)  # otherwise it would change nothing
        return signals

    def _signal(
        self,
        key_id: str,
        state: KeyState,
        minute_ms: int,
        aggregate: MinuteAggregate,
        usual: float,
        threshold: float,
        window_start: int,
    ) -> Signal:
        ips = sorted(aggregate.ips)
        score = len(ips) / threshold
        severity = Severity.HIGH if score >= self.thresholds.severe_score else Severity.MEDIUM
        networks = networks_with_counts(ips, 10)
        message = (
            f"Key {key_id} was used from {len(ips)} distinct IP addresses in the minute starting "
            f"{minute_text(minute_ms)} ({aggregate.requests:,} requests, in {', '.join(networks[:4])}"
            f"{' and more' if len(networks) > 4 else ''}); in recent weeks its busiest minute had about "
            f"{count_text(usual)} (alert threshold {count_text(threshold)}). Many addresses at once can mean "
            f"the key is shared or leaked and used from a botnet or many machines."
        )
        return build_signal(
            key_id=key_id,
            project_id=state.project_id,
            kind=SignalKind.MANY_IPS,
            severity=severity,
            score=score,
            observed=float(len(ips)),
            expected=usual,
            window_start_ms=window_start,
            window_ms=self._window_ms,
            detected_at_ms=minute_ms + MINUTE_MS,
            evidence={"minutes": [minute_text(minute_ms)], "ips": ips[:20], "networks": networks},
            message=message,
        )
