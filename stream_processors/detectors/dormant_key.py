"""A dormant key suddenly active: the first use after a long silence."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from operator import attrgetter

from keytrail.schemas.signals import Severity, Signal, SignalKind
from keytrail.schemas.usage import KeyUsageEvent
from keytrail.stream_processors.core.clock import epoch_ms, from_epoch_ms
from keytrail.stream_processors.core.state import KeyState, MinuteAggregate
from keytrail.stream_processors.detectors.dedupe import claim_window
from keytrail.stream_processors.detectors.event_time import DAY_MS, MINUTE_MS, minute_text
from keytrail.stream_processors.detectors.signal_builder import build_signal, clip
from keytrail.stream_processors.detectors.wording import plural

_OCCURRED_AT = attrgetter("occurred_at")


@dataclass(frozen=True, slots=True)
class DormantKeyThresholds:
    dormant_days: int = 30
    """Silence (no use at all) that makes a key dormant."""
    severe_days: int = 90
    """Silence after which the revival is high severity."""
    rhythm_tolerance: float = 1.5
    """A revival is the key's rhythm (a monthly job) when its silence is at most this × the previous one."""
    window_minutes: int = 60


class DormantKeyDetector:
    """Remembers the newest use; fires on an event at least `dormant_days` later.

    Learning: needs one earlier use of the key (a key's very first use is not a revival).
    A key with a rhythm of long silences — a monthly job — fires on the first revival only: the
    next one whose silence is at most 1.5× the previous silence, within three silences of it, is quiet.
    Memory: `l` newest use, `g` previous silence, `r` previous revival (ms).
    """

    name = "dormant_key_active"

    def __init__(self, thresholds: DormantKeyThresholds | None = None) -> None:
        self.thresholds = thresholds or DormantKeyThresholds()
        self._dormant_ms = self.thresholds.dormant_days * DAY_MS
        self._dormant = timedelta(days=self.thresholds.dormant_days)
        self._window_ms = self.thresholds.window_minutes * MINUTE_MS

    def observe(
        self,
        key_id: str,
        state: KeyState,
        events: Sequence[KeyUsageEvent],
        closed_minutes: Sequence[tuple[int, MinuteAggregate]],
    ) -> list[Signal]:
        if not events:
            return []
        memory = state.detector_state.setdefault(self.name, {})
        last_ms = memory.get("l", -1)
        newest = from_epoch_ms(last_ms) if last_ms >= 0 else None
        # Fast path: no gap between successive newest uses can reach `dormant_days` when the latest event
        # is closer than that to the remembered newest use (or, for a new key, to the batch's earliest event).
        latest = max(events, key=_OCCURRED_AT).occurred_at
        floor = newest if newest is not None else min(events, key=_OCCURRED_AT).occurred_at
        if latest - floor < self._dormant:
            memory["l"] = epoch_ms(latest if newest is None or latest > newest else newest)
            return []
        signals: list[Signal] = []
        for event in events:
            at = event.occurred_at
            if newest is not None:
                if at <= newest:
                    continue
                if at - newest >= self._dormant:
                    signal = self._revival(key_id, state, memory, event, epoch_ms(newest), epoch_ms(at))
                    if signal is not None:
                        signals.append(signal)
            newest = at
        if newest is not None:
            memory["l"] = epoch_ms(newest)
        return signals

    def _revival(
        self, key_id: str, state: KeyState, memory: dict, event: KeyUsageEvent, last: int, at_ms: int
    ) -> Signal | None:
        silence = at_ms - last
        previous_silence, previous_revival = memory.get("g", 0), memory.get("r", 0)
        rhythmic = (
            previous_silence > 0
            and silence <= self.thresholds.rhythm_tolerance * previous_silence
            and at_ms - previous_revival <= 3 * silence
        )
        memory["g"], memory["r"] = silence, at_ms
        if rhythmic:
            return None
        window_start = claim_window(memory, at_ms, self._window_ms)
        if window_start is None:
            return None
        days = silence // DAY_MS
        severity = Severity.HIGH if days >= self.thresholds.severe_days else Severity.MEDIUM
        route = f"{event.method} {clip(event.route)}"
        message = (
            f"Key {key_id} was used at {minute_text(at_ms)} from {event.client_ip} ({route} on "
            f"{clip(event.service, 60)}) after {plural(days, 'day')} without any use (previous use "
            f"{minute_text(last)}; dormant means {self.thresholds.dormant_days}+ days). A key that wakes "
            f"up after a long silence may be in someone else's hands; check who uses it now."
        )
        return build_signal(
            key_id=key_id,
            project_id=state.project_id,
            kind=SignalKind.DORMANT_KEY_ACTIVE,
            severity=severity,
            score=silence / self._dormant_ms,
            observed=silence / DAY_MS,
            expected=float(self.thresholds.dormant_days),
            window_start_ms=window_start,
            window_ms=self._window_ms,
            detected_at_ms=at_ms,
            evidence={
                "ips": [event.client_ip],
                "routes": [route],
                "services": [event.service],
                "previous_use": [minute_text(last)],
            },
            message=message,
        )
