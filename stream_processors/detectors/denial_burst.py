"""A burst of denied, invalid or rate-limited requests, well above what the key normally gets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from keytrail.schemas.signals import Severity, Signal, SignalKind
from keytrail.schemas.usage import KeyUsageEvent, Outcome
from keytrail.stream_processors.core.clock import epoch_ms
from keytrail.stream_processors.core.state import OUTCOME_INDEX, KeyState, MinuteAggregate
from keytrail.stream_processors.detectors.dedupe import claim_window
from keytrail.stream_processors.detectors.event_time import DAY_MS, HOUR_MS, MINUTE_MS, minute_text
from keytrail.stream_processors.detectors.levels import CEILING, peak_level, raise_peak
from keytrail.stream_processors.detectors.signal_builder import build_signal, clip
from keytrail.stream_processors.detectors.wording import count_text, join_names

BURST_OUTCOMES = (Outcome.DENIED, Outcome.INVALID, Outcome.RATE_LIMITED)
"""Revoked, expired and disabled have their own detector (use of an inactive key)."""
_DENIED, _INVALID, _LIMITED = (OUTCOME_INDEX[outcome] for outcome in BURST_OUTCOMES)
_EVIDENCE_PER_MINUTE = 5
_EVIDENCE_MINUTES = 16


@dataclass(frozen=True, slots=True)
class DenialBurstThresholds:
    factor: float = 3.0
    """A minute must have more than this × the key's usual worst minute of refusals ..."""
    share_of_requests: float = 0.02
    """... where "usual" is at least this share of the minute's requests (busy keys get refusals) ..."""
    min_refusals: int = 10
    """... and at least this many refusals."""
    decay_days: int = 7
    severe_score: float = 3.0
    learning_days: int = 3
    window_minutes: int = 60


class DenialBurstDetector:
    """Collects a few IPs and routes of refused requests per open minute; judges minutes when they close.

    Memory: `g` [level, hour] worst minute of refusals, `f` first minute, `e` {minute: [ips, routes]}
    for open minutes that had refusals (emptied as they close), `x`.
    """

    name = "denial_burst"

    def __init__(self, thresholds: DenialBurstThresholds | None = None) -> None:
        self.thresholds = thresholds or DenialBurstThresholds()
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
        memory = state.detector_state.get(self.name)
        for event in events:
            if event.outcome in BURST_OUTCOMES:
                if memory is None:
                    memory = state.detector_state[self.name] = {"g": [0, 0], "f": -1}
                self._collect(memory, event)
        if not closed_minutes:
            return []
        if memory is None:
            memory = state.detector_state[self.name] = {"g": [0, 0], "f": -1}
        if memory["f"] < 0:
            memory["f"] = closed_minutes[0][0] * 1000
        limits = self.thresholds
        peak: list[int] = memory["g"]
        learnt_from = memory["f"] + self._learning_ms
        collected: dict[str, Any] = memory.get("e", {})
        signals: list[Signal] = []
        for minute_s, aggregate in closed_minutes:
            evidence = collected.pop(str(minute_s), None)
            outcomes = aggregate.outcomes
            refusals = outcomes[_DENIED] + outcomes[_INVALID] + outcomes[_LIMITED]
            if not refusals:
                continue
            minute_ms = minute_s * 1000
            hour = minute_ms // HOUR_MS
            if refusals >= limits.min_refusals and minute_ms >= learnt_from:
                usual = max(
                    CEILING[peak_level(peak, hour, self._decay_hours)],
                    limits.share_of_requests * aggregate.requests,
                )
                threshold = max(limits.min_refusals, limits.factor * usual)
                if refusals >= threshold:
                    window_start = claim_window(memory, minute_ms, self._window_ms)
                    if window_start is not None:
                        signals.append(
                            self._signal(key_id, state, minute_ms, aggregate, refusals, usual, threshold,
                                         evidence or [[], []], window_start)
                        )
            raise_peak(peak, refusals, hour, self._decay_hours)
        if "e" in memory and not memory["e"]:
            del memory["e"]
        return signals

    def _collect(self, memory: dict[str, Any], event: KeyUsageEvent) -> None:
        minute = str(epoch_ms(event.occurred_at) // MINUTE_MS * 60)
        collected = memory.setdefault("e", {})
        entry = collected.get(minute)
        if entry is None:
            if len(collected) >= _EVIDENCE_MINUTES:
                del collected[min(collected, key=int)]
            entry = collected[minute] = [[], []]
        ips, routes = entry
        route = f"{event.method} {clip(event.route, 80)}"
        if event.client_ip not in ips and len(ips) < _EVIDENCE_PER_MINUTE:
            ips.append(event.client_ip)
        if route not in routes and len(routes) < _EVIDENCE_PER_MINUTE:
            routes.append(route)

    def _signal(
        self,
        key_id: str,
        state: KeyState,
        minute_ms: int,
        aggregate: MinuteAggregate,
        refusals: int,
        usual: float,
        threshold: float,
        evidence: list[list[str]],
        window_start: int,
    ) -> Signal:
        score = refusals / threshold
        severity = Severity.HIGH if score >= self.thresholds.severe_score else Severity.MEDIUM
        breakdown = [
            f"{outcome.value}={aggregate.outcomes[OUTCOME_INDEX[outcome]]}"
            for outcome in BURST_OUTCOMES
            if aggregate.outcomes[OUTCOME_INDEX[outcome]]
        ]
        ips, routes = evidence
        source = f" Refused requests came from {join_names(ips, 5)} on {join_names(routes, 3)}." if ips else ""
        message = (
            f"Key {key_id} had {refusals:,} denied, invalid or rate-limited requests in the minute starting "
            f"{minute_text(minute_ms)} ({', '.join(breakdown)}, out of {aggregate.requests:,} requests); its "
            f"worst minute in recent weeks had about {count_text(usual)} (alert threshold "
            f"{count_text(threshold)}).{source} A burst of refusals often means someone probing with the key "
            f"beyond its scopes, or a client stuck retrying."
        )
        return build_signal(
            key_id=key_id,
            project_id=state.project_id,
            kind=SignalKind.DENIAL_BURST,
            severity=severity,
            score=score,
            observed=float(refusals),
            expected=usual,
            window_start_ms=window_start,
            window_ms=self._window_ms,
            detected_at_ms=minute_ms + MINUTE_MS,
            evidence={"minutes": [minute_text(minute_ms)], "outcomes": breakdown, "ips": ips, "routes": routes},
            message=message,
        )
