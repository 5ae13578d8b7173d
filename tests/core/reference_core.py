"""The per-event core as it was before the columnar rewrite (66b7f27), kept as the oracle of equivalence tests."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from keytrail.schemas.last_used import LastUsed
from keytrail.schemas.signals import Signal
from keytrail.schemas.usage import DENIAL_OUTCOMES, KeyUsageEvent, Outcome
from keytrail.stream_processors.core.clock import EPOCH, from_epoch_ms
from keytrail.stream_processors.core.state import OUTCOME_INDEX, OUTCOME_ORDER, KeyState, MinuteAggregate

MINUTE_MS = 60_000
MAX_EVENT_IDS_PER_KEY = 100_000
"""Dedupe memory bound per key (~2.2 MB of state): exact for up to ~270 events/s per key
sustained over the default allowed lateness plus the open minute; beyond it the oldest open
minutes forget their ids (counted in `BatchResult.forgotten_event_ids`)."""
_OUTCOME_ERROR = Outcome.ERROR
_OUTCOME_NAMES = tuple(outcome.value for outcome in OUTCOME_ORDER)


class StateMapping(Protocol):
    """Where per-key state lives: a dict in-process, a Faust table in production."""

    def get(self, key: str, /) -> KeyState | None: ...

    def __setitem__(self, key: str, value: KeyState, /) -> None: ...


class Detector(Protocol):
    """One anomaly detector. It owns `state.detector_state[name]` and nothing else."""

    name: str

    def observe(
        self,
        key_id: str,
        state: KeyState,
        events: Sequence[KeyUsageEvent],
        closed_minutes: Sequence[tuple[int, MinuteAggregate]],
    ) -> list[Signal]:
        """Look at the key's new (deduplicated, on-time) events and closed minutes; return signals."""
        ...


@dataclass(slots=True)
class MinuteUsage:
    """Full counts of one key in one minute of event time (re-sent whole when a late event lands)."""

    key_id: str
    project_id: str
    minute_start_s: int
    requests: int
    errors: int
    denials: int
    outcomes: dict[str, int]
    distinct_ips: int
    request_bytes: int
    response_bytes: int

    @property
    def revision(self) -> int:
        """Counts only grow inside a minute, so the request count orders revisions."""
        return self.requests


@dataclass(slots=True)
class BatchResult:
    """What one batch produced."""

    accepted: list[KeyUsageEvent] = field(default_factory=list)
    """New events counted in their minute: the audit trail, on time."""
    late: list[KeyUsageEvent] = field(default_factory=list)
    """Events older than the allowed lateness: stored in the audit trail flagged late, not counted."""
    duplicates: int = 0
    forgotten_event_ids: int = 0
    """Event ids dropped from a hot key's dedupe memory to keep its state under the size bound."""
    minutes: list[MinuteUsage] = field(default_factory=list)
    last_used: list[LastUsed] = field(default_factory=list)
    signals: list[Signal] = field(default_factory=list)


def is_error(event: KeyUsageEvent) -> bool:
    """A server-side failure: outcome `error` or a 5xx status."""
    return event.outcome is _OUTCOME_ERROR or event.status >= 500


class UsageAggregator:
    """The core. Deterministic: the same events in the same per-key order give the same state and outputs."""

    def __init__(
        self,
        allowed_lateness_s: int = 300,
        detectors: Iterable[Detector] = (),
        max_event_ids_per_key: int = MAX_EVENT_IDS_PER_KEY,
    ) -> None:
        self.allowed_lateness_ms = allowed_lateness_s * 1000
        self.detectors = list(detectors)
        self.max_event_ids_per_key = max_event_ids_per_key

    def process(
        self,
        events: Sequence[KeyUsageEvent],
        states: StateMapping,
        positions: Sequence[tuple[int, int]] | None = None,
    ) -> BatchResult:
        """Fold a batch into the per-key states; each key's state is read and written once.

        `positions` (the Kafka partition and offset of each event, from the worker) make
        re-delivery after a crash or rebalance recognisable without the event-id memory: a key's
        events all live in one partition, in offset order, and its state records the last offset
        it has folded, so anything at or below it was counted already.
        """
        result = BatchResult()
        if positions is None:
            by_key: dict[str, list[KeyUsageEvent]] = {}
            for event in events:
                by_key.setdefault(event.key_id, []).append(event)
            for key_id, key_events in by_key.items():
                state = states.get(key_id) or KeyState(project_id=key_events[0].project_id)
                self._fold_key(key_id, state, key_events, result)
                states[key_id] = state
            return result
        positioned: dict[str, list[tuple[KeyUsageEvent, tuple[int, int]]]] = {}
        for event, position in zip(events, positions, strict=True):
            positioned.setdefault(event.key_id, []).append((event, position))
        for key_id, pairs in positioned.items():
            state = states.get(key_id) or KeyState(project_id=pairs[0][0].project_id)
            source = state.source
            if source is not None:
                partition, applied = source
                fresh = [event for event, (p, offset) in pairs
                         if p != partition or offset > applied or not self._folded_already(state, event)]
                result.duplicates += len(pairs) - len(fresh)
            else:
                fresh = [event for event, _ in pairs]
            if fresh:
                self._fold_key(key_id, state, fresh, result)
            partition = pairs[-1][1][0]
            newest = max(offset for _, (p, offset) in pairs if p == partition)
            if source is not None and source[0] == partition:
                newest = max(newest, source[1])  # a re-delivered batch never moves it back
            state.source = (partition, newest)
            states[key_id] = state
        return result

    def _folded_already(self, state: KeyState, event: KeyUsageEvent) -> bool:
        """Whether an event at or below the key's folded offset was counted, as far as can be known.

        Offsets alone would say yes, but the consumer can deliver a later offset without an
        earlier one (seen with Faust's recovery hand-off), and trusting them then would drop
        the earlier event for good when it finally arrives. So the key's own memory decides
        where it can: a minute still open with its event ids complete knows exactly which
        events it counted. The offset decides only where that memory cannot: a minute whose
        ids were forgotten (hot keys, past the id bound) or one already closed.
        """
        delta = event.occurred_at - EPOCH
        t_ms = (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
        minute_s = t_ms // MINUTE_MS * 60
        if minute_s * 1000 + self.allowed_lateness_ms + MINUTE_MS <= state.watermark_ms:
            return True  # closed: counted then, or too late to count now either way
        aggregate = state.open_minutes.get(minute_s)
        if aggregate is None:
            return False  # nothing of this minute was ever counted
        ids_complete = len(aggregate.event_ids) >= aggregate.requests
        return not ids_complete or event.event_id.int in aggregate.event_ids

    def _fold_key(self, key_id: str, state: KeyState, events: list[KeyUsageEvent], result: BatchResult) -> None:
        # The hot loop of the worker: locals instead of attribute lookups, and the last-used
        # winner is picked by (event time, event id) with the id's text only built on a tie.
        lateness_and_minute = self.allowed_lateness_ms + MINUTE_MS
        open_minutes = state.open_minutes
        watermark = state.watermark_ms
        best_ms = state.last_used_ms
        best_id = state.last_used_event_id
        best_event = None
        touched: set[int] = set()
        fresh: list[KeyUsageEvent] = []
        late = result.late
        duplicates = 0
        denial_outcomes = DENIAL_OUTCOMES
        outcome_index = OUTCOME_INDEX
        for event in events:
            delta = event.occurred_at - EPOCH
            t_ms = (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
            minute_s = t_ms // MINUTE_MS * 60
            if minute_s * 1000 + lateness_and_minute <= watermark:
                late.append(event)
                continue
            aggregate = open_minutes.get(minute_s)
            if aggregate is None:
                aggregate = open_minutes[minute_s] = MinuteAggregate()
            event_int = event.event_id.int
            event_ids = aggregate.event_ids
            if event_int in event_ids:
                duplicates += 1
                continue
            event_ids.add(event_int)
            aggregate.requests += 1
            outcome = event.outcome
            if outcome is _OUTCOME_ERROR or event.status >= 500:
                aggregate.errors += 1
            if outcome in denial_outcomes:
                aggregate.denials += 1
            aggregate.outcomes[outcome_index[outcome]] += 1
            aggregate.ips.add(event.client_ip)
            aggregate.request_bytes += event.request_bytes
            aggregate.response_bytes += event.response_bytes
            touched.add(minute_s)
            fresh.append(event)
            if t_ms > watermark:
                watermark = t_ms
            if t_ms > best_ms:
                best_ms, best_event, best_id = t_ms, event, ""
            elif t_ms == best_ms:
                if best_event is not None and not best_id:
                    best_id = str(best_event.event_id)
                event_id = str(event.event_id)
                if event_id > best_id:
                    best_event, best_id = event, event_id
        state.watermark_ms = watermark
        state.total_requests += len(fresh)
        result.duplicates += duplicates
        result.accepted.extend(fresh)
        for minute_s in sorted(touched):
            result.minutes.append(self._minute_usage(key_id, state.project_id, minute_s, open_minutes[minute_s]))
        closed = self._close_minutes(state)
        result.forgotten_event_ids += self._bound_dedupe_memory(open_minutes)
        for detector in self.detectors:
            result.signals.extend(detector.observe(key_id, state, fresh, closed))
        if best_event is not None:
            state.last_used_ms = best_ms
            state.last_used_event_id = best_id or str(best_event.event_id)
            state.last_used_ip = best_event.client_ip
            state.last_used_route = best_event.route
            state.last_used_service = best_event.service
            # Built from validated events, so the record is not validated again.
            result.last_used.append(
                LastUsed.model_construct(
                    key_id=key_id,
                    project_id=state.project_id,
                    last_used_at=from_epoch_ms(best_ms),
                    last_used_ip=state.last_used_ip,
                    route=state.last_used_route,
                    service=state.last_used_service,
                    event_id=state.last_used_event_id,
                )
            )

    def _bound_dedupe_memory(self, open_minutes: dict[int, MinuteAggregate]) -> int:
        """Forget the event ids of a key's oldest open minutes beyond the bound; returns how many.

        Counts stay; only the memory that recognises a re-delivered event of those minutes goes.
        Without a bound, a key sending thousands of events a second would carry megabytes of ids
        in every state write (and Faust refuses changelog records over its request size).
        """
        total = 0
        for aggregate in open_minutes.values():
            total += len(aggregate.event_ids)
        if total <= self.max_event_ids_per_key:
            return 0
        forgotten = 0
        for minute_s in sorted(open_minutes)[:-1]:  # never the newest minute
            ids = open_minutes[minute_s].event_ids
            if not ids:
                continue
            forgotten += len(ids)
            total -= len(ids)
            open_minutes[minute_s].event_ids = set()
            if total <= self.max_event_ids_per_key:
                break
        return forgotten

    def _close_minutes(self, state: KeyState) -> list[tuple[int, MinuteAggregate]]:
        """Drop minutes past the allowed lateness; their rows were already emitted."""
        horizon = state.watermark_ms - self.allowed_lateness_ms - MINUTE_MS
        closed = [(m, a) for m, a in state.open_minutes.items() if m * 1000 <= horizon]
        for minute_s, _ in closed:
            del state.open_minutes[minute_s]
        closed.sort(key=lambda item: item[0])
        if closed:  # the rows of closed minutes are final (stream time, issue 18)
            state.closed_through_s = max(state.closed_through_s, closed[-1][0])
        return closed

    @staticmethod
    def _minute_usage(key_id: str, project_id: str, minute_s: int, aggregate: MinuteAggregate) -> MinuteUsage:
        return MinuteUsage(
            key_id=key_id,
            project_id=project_id,
            minute_start_s=minute_s,
            requests=aggregate.requests,
            errors=aggregate.errors,
            denials=aggregate.denials,
            outcomes=dict(zip(_OUTCOME_NAMES, aggregate.outcomes, strict=True)),
            distinct_ips=len(aggregate.ips),
            request_bytes=aggregate.request_bytes,
            response_bytes=aggregate.response_bytes,
        )
