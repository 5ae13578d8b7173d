"""Any use of a revoked, expired or disabled key: always reported, no learning needed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from keytrail.schemas.signals import Severity, Signal, SignalKind
from keytrail.schemas.usage import KeyUsageEvent, Outcome
from keytrail.stream_processors.core.clock import epoch_ms
from keytrail.stream_processors.core.state import KeyState, MinuteAggregate
from keytrail.stream_processors.detectors.dedupe import claim_window
from keytrail.stream_processors.detectors.event_time import MINUTE_MS, minute_text, window_of
from keytrail.stream_processors.detectors.signal_builder import build_signal, clip

INACTIVE_OUTCOMES: dict[Outcome, Severity] = {
    Outcome.REVOKED: Severity.CRITICAL,
    Outcome.EXPIRED: Severity.HIGH,
    Outcome.DISABLED: Severity.HIGH,
}
"""A revoked key is usually revoked because it leaked; expired and disabled keys are more often forgotten."""
_REVOKED, _EXPIRED, _DISABLED = Outcome.REVOKED, Outcome.EXPIRED, Outcome.DISABLED

_WHY = {
    Outcome.REVOKED: "Revoked keys are usually revoked because they leaked: whoever sent this request holds the secret.",
    Outcome.EXPIRED: "Someone still holds and sends this secret: a forgotten deployment, or a copy outside your control.",
    Outcome.DISABLED: "Someone still holds and sends this secret: a forgotten deployment, or a copy outside your control.",
}


@dataclass(frozen=True, slots=True)
class InactiveKeyThresholds:
    window_minutes: int = 60
    """One signal per key per aligned window, however many requests the window holds."""


class InactiveKeyDetector:
    """Fires on the earliest request of a window whose outcome says the key is revoked, expired or disabled.

    Its memory is empty until it fires once (then the end of the last signalled window and the
    time of the use reported in each of the last two).
    """

    name = "use_of_inactive_key"

    def __init__(self, thresholds: InactiveKeyThresholds | None = None) -> None:
        self.thresholds = thresholds or InactiveKeyThresholds()
        self._window_ms = self.thresholds.window_minutes * MINUTE_MS

    def observe(
        self,
        key_id: str,
        state: KeyState,
        events: Sequence[KeyUsageEvent],
        closed_minutes: Sequence[tuple[int, MinuteAggregate]],
    ) -> list[Signal]:
        signals: list[Signal] = []
        for event in events:
            outcome = event.outcome
            # Identity tests first: hashing an Enum member for the dict look-up runs Python code per event.
            if outcome is not _REVOKED and outcome is not _EXPIRED and outcome is not _DISABLED:
                continue
            severity = INACTIVE_OUTCOMES[outcome]
            memory = state.detector_state.setdefault(self.name, {})
            at_ms = epoch_ms(event.occurred_at)
            window_start = self._claim(memory, at_ms, str(event.event_id))
            if window_start is None:
                continue
            signals.append(self._signal(key_id, state, event, severity, at_ms, window_start))
        return signals

    def _claim(self, memory: dict, at_ms: int, event_id: str) -> int | None:
        """The start of `at_ms`'s window if this use is the earliest seen in it (by event time,
        then event id text).

        The signal describes the window's earliest use, not the first to arrive: an earlier use
        arriving later (within the allowed lateness) raises the window's signal again, same id,
        so a stream and a replay of it (which reads the log in event-time order) end with the same
        row. `"w"` holds [window start, time, event id] of the use reported in each of the last two
        windows signalled.
        """
        window = self._window_ms
        reported = memory.get("w")
        if reported is None:  # first signal, or memory from before "w" existed: claim as before
            start = claim_window(memory, at_ms, window)
            if start is not None:
                memory["w"] = [[start, at_ms, event_id]]
            return start
        start = window_of(at_ms, window)
        for entry in reported:
            if entry[0] == start:
                if (at_ms, event_id) >= (entry[1], entry[2]):
                    return None
                entry[1], entry[2] = at_ms, event_id
                return start
        newest_end = memory.get("x", 0)
        if start < newest_end - 2 * window:  # beyond any allowed lateness: as before, not raised again
            return None
        memory["x"] = max(newest_end, start + window)
        reported.append([start, at_ms, event_id])
        reported.sort()
        del reported[:-2]
        return start

    def _signal(
        self, key_id: str, state: KeyState, event: KeyUsageEvent, severity: Severity, at_ms: int, window_start: int
    ) -> Signal:
        status = event.outcome.value
        route = f"{event.method} {clip(event.route)}"
        message = (
            f"Key {key_id} is {status} but was used at {minute_text(at_ms)} from {event.client_ip} "
            f"({route} on {clip(event.service, 60)}; the service refused it with status {event.status}). "
            f"{_WHY[event.outcome]} Further attempts in the same hour are folded into this signal."
        )
        return build_signal(
            key_id=key_id,
            project_id=state.project_id,
            kind=SignalKind.USE_OF_INACTIVE_KEY,
            severity=severity,
            score=10.0 if severity is Severity.CRITICAL else 5.0,
            observed=1.0,
            expected=0.0,
            window_start_ms=window_start,
            window_ms=self._window_ms,
            detected_at_ms=at_ms,
            evidence={
                "ips": [event.client_ip],
                "routes": [route],
                "services": [event.service],
                "outcomes": [status],
                "user_agents": [event.user_agent] if event.user_agent else [],
            },
            message=message,
        )
