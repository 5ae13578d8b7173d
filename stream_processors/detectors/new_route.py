"""A route the key never called before (service, method and route template), after learning."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from keytrail.schemas.signals import Severity, Signal, SignalKind
from keytrail.schemas.usage import KeyUsageEvent
from keytrail.stream_processors.core.clock import epoch_ms
from keytrail.stream_processors.core.state import KeyState, MinuteAggregate
from keytrail.stream_processors.detectors.dedupe import claim_window, window_open
from keytrail.stream_processors.detectors.event_time import (
    DAY_MS,
    EPOCH_ORDINAL,
    MINUTE_MS,
    epoch_day,
    minute_text,
)
from keytrail.stream_processors.detectors.feedback import DetectorFeedback
from keytrail.stream_processors.detectors.levels import ALPHABET
from keytrail.stream_processors.detectors.novelty import is_nomadic, least_recent, note_discovery, teach_known
from keytrail.stream_processors.detectors.signal_builder import build_signal, clip
from keytrail.stream_processors.detectors.wording import join_names, plural

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class NewRouteThresholds:
    learning_days: int = 7
    max_routes: int = 64
    """Routes remembered per key (as 32-bit fingerprints); the least recently used is forgotten first."""
    examples: int = 3
    """Route names kept verbatim, to say in a message what the key usually calls."""
    nomad_routes: int = 6
    """A key that called this many new routes within `nomad_days` (not counting its first two days) is
    nomadic — typically routes that are not templated (`/v1/orders/1234`): it stays quiet and
    remembers only `nomad_max_routes`."""
    nomad_days: int = 28
    nomad_max_routes: int = 16
    window_minutes: int = 60


def route_name(event: KeyUsageEvent) -> str:
    return f"{event.method} {clip(event.route)}"


def fingerprint(event: KeyUsageEvent) -> str:
    """Stable 32-bit fingerprint of (service, method, route): 6 characters in the state."""
    return _fingerprint(event.service, event.method, event.route)


@lru_cache(maxsize=1 << 14)
def _fingerprint(service: str, method: str, route: str) -> str:
    value = zlib.crc32(f"{service}\x1f{method}\x1f{route}".encode())
    return "".join(ALPHABET[(value >> shift) & 63] for shift in (0, 6, 12, 18, 24, 30))


class NewRouteDetector:
    """Remembers the key's routes by fingerprint with the day each was last called.

    Severity: a first write (POST, PUT, PATCH, DELETE, ...) by a key that only ever read is high;
    a new write route is medium; a new read route is low.
    Nomadic keys (see `novelty`) stay quiet.
    Memory: `f` first day (since the epoch), `r` {fingerprint: last day}, `e` example names, `w` 1 once
    the key wrote, `k` days of the latest new routes (days counted from `f`), `x` end of the last
    signalled window, `t` fingerprints taught by feedback (never forgotten while pinned, see `novelty`).
    """

    name = "new_route"
    kinds = (SignalKind.NEW_ROUTE.value,)
    distinct_events = ("service", "method", "route")
    """Only the first event of each distinct value per UTC day matters here (later ones are 'seen')."""

    def __init__(self, thresholds: NewRouteThresholds | None = None) -> None:
        self.thresholds = thresholds or NewRouteThresholds()
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
        memory = state.detector_state.get(self.name)
        if memory is None:
            memory = state.detector_state[self.name] = {"f": epoch_day(events[0].occurred_at), "r": {}, "e": []}
        known: dict[str, int] = memory["r"]
        known_get = known.get
        origin = EPOCH_ORDINAL + memory["f"]
        signals: list[Signal] = []
        # Hot loop: one memoised fingerprint and one dict probe per event.
        for event in events:
            print_ = _fingerprint(event.service, event.method, event.route)
            day = event.occurred_at.toordinal() - origin  # days since the key's first day
            seen = known_get(print_)
            if seen is not None:
                if day > seen:
                    known[print_] = day
                continue
            signal = self._first_call(key_id, state, memory, event, print_, day)
            if signal is not None:
                signals.append(signal)
        return signals

    def teach(self, state: KeyState, feedback: DetectorFeedback) -> bool:
        """The signal's route was expected: it becomes known for the key and is never forgotten.

        The route is rebuilt from the evidence (`services` and `routes` as `METHOD /template`); a route
        clipped in the evidence (over 120 characters) cannot be, and nothing is learnt. Idempotent.
        """
        memory = state.detector_state.get(self.name)
        if memory is None or feedback.kind not in self.kinds:
            return False
        services = list(feedback.evidence.get("services", ()))
        prints: list[str] = []
        for name in feedback.evidence.get("routes", ()):
            method, _, route = name.partition(" ")
            if not route or route.endswith("…") or not services:
                continue
            prints.extend(_fingerprint(service, method, route) for service in services[:1])
        if not prints:
            return False
        day = max(feedback.window_end_ms // DAY_MS - memory["f"], 0)
        limits = self.thresholds
        nomadic = is_nomadic(memory, day, limits.nomad_routes, limits.nomad_days)
        cap = limits.nomad_max_routes if nomadic else limits.max_routes
        return teach_known(memory, "r", prints, day, cap)

    def _first_call(
        self, key_id: str, state: KeyState, memory: dict[str, Any], event: KeyUsageEvent, print_: str, day: int
    ) -> Signal | None:
        known: dict[str, int] = memory["r"]
        limits = self.thresholds
        note_discovery(memory, day, 0, limits.nomad_routes)
        nomadic = is_nomadic(memory, day, limits.nomad_routes, limits.nomad_days)
        history_days = day
        writes = event.method not in READ_METHODS
        signal = None
        if history_days >= limits.learning_days and not nomadic and known:
            at_ms = epoch_ms(event.occurred_at)
            if window_open(memory, at_ms, self._window_ms):
                signal = self._signal(key_id, state, memory, event, at_ms, history_days, writes)
        known[print_] = day
        if writes:
            memory["w"] = 1
        if len(memory["e"]) < self.thresholds.examples:
            memory["e"].append(route_name(event)[:80])
        cap = limits.nomad_max_routes if nomadic else limits.max_routes
        while len(known) > cap:
            del known[least_recent(known, memory.get("t", ()))]
        return signal

    def _signal(
        self,
        key_id: str,
        state: KeyState,
        memory: dict[str, Any],
        event: KeyUsageEvent,
        at_ms: int,
        history_days: int,
        writes: bool,
    ) -> Signal:
        window_start = claim_window(memory, at_ms, self._window_ms)
        assert window_start is not None
        name = route_name(event)
        others = len(memory["r"])
        message = (
            f"Key {key_id} called {name} on {clip(event.service, 60)} for the first time ({minute_text(at_ms)}, "
            f"from {event.client_ip}, status {event.status}, outcome {event.outcome.value}); in "
            f"{plural(history_days, 'day')} it had called {plural(others, 'other route')}, e.g. "
            f"{join_names(memory['e'], 3)}."
        )
        if writes and not memory.get("w"):
            severity, score = Severity.HIGH, 3.0
            message += f" It is the key's first write ({event.method}): until now it only read."
        elif writes:
            severity, score = Severity.MEDIUM, 2.0
        else:
            severity, score = Severity.LOW, 1.0
        return build_signal(
            key_id=key_id,
            project_id=state.project_id,
            kind=SignalKind.NEW_ROUTE,
            severity=severity,
            score=score,
            observed=1.0,
            expected=0.0,
            window_start_ms=window_start,
            window_ms=self._window_ms,
            detected_at_ms=at_ms,
            evidence={
                "routes": [name],
                "known_routes": list(memory["e"]),
                "ips": [event.client_ip],
                "services": [event.service],
                "outcomes": [event.outcome.value],
            },
            message=message,
        )
