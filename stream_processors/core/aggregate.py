"""Batch aggregation: last used, per-minute frequency and event-id dedupe, per key."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from keytrail.schemas.last_used import LastUsed
from keytrail.schemas.signals import Signal
from keytrail.schemas.usage import KeyUsageEvent, Outcome
from keytrail.stream_processors.core.clock import from_epoch_ms
from keytrail.stream_processors.core.columns import EventColumns
from keytrail.stream_processors.core.state import OUTCOME_ORDER, KeyState, MinuteAggregate

MINUTE_MS = 60_000
MAX_EVENT_IDS_PER_KEY = 100_000
"""Dedupe memory bound per key (~2.2 MB of state): exact for up to ~270 events/s per key
sustained over the default allowed lateness plus the open minute; beyond it the oldest open
minutes forget their ids (counted in `BatchResult.forgotten_event_ids`)."""
_OUTCOME_ERROR = Outcome.ERROR
_OUTCOME_NAMES = tuple(outcome.value for outcome in OUTCOME_ORDER)
_OUTCOME_COUNT = len(OUTCOME_ORDER)
_TIME_BITS = 42
_TIME_MAX = (1 << _TIME_BITS) - 1
"""Event times (ms) share an int64 with the key's code in segmented running maxima: 2^42 ms
reaches the year 2109, past anything the future-skew check lets in."""


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
    columns: EventColumns | None = None
    """The batch as columns (rows = the input events), for sinks that write Arrow."""
    accepted_index: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    """Rows of `columns` that are `accepted`, in the same order."""
    late_index: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    """Rows of `columns` that are `late`, in the same order."""


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

        The batch is handled as columns: lateness, dedupe and the per-(key, minute) counts are
        numpy operations over the whole batch; Python runs once per distinct key and once per
        distinct key-minute, never per event (except the id-memory lookups of minutes a key
        still holds open from earlier batches, one set probe each).

        `positions` (the Kafka partition and offset of each event, from the worker; the events of
        one envelope share its offset) make re-delivery after a crash or rebalance recognisable:
        a key's events all live in one partition, in offset order, and its state records the
        last offset it has folded, so anything at or below it may have been counted already.
        """
        result = BatchResult()
        n = len(events)
        if n == 0:
            return result
        columns = EventColumns.of(events)
        result.columns = columns
        key_index: dict[str, int] = {}
        setdefault = key_index.setdefault
        codes = np.fromiter([setdefault(k, len(key_index)) for k in columns.key_id], np.int64, n)
        keys = list(key_index)
        order = np.argsort(codes, kind="stable")  # grouped by key, arrival order inside a key
        sorted_codes = codes[order]
        starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
        ends = np.r_[starts[1:], n]
        first_rows = order[starts]
        project_ids = columns.project_id
        key_states: list[KeyState] = []
        for code, key_id in enumerate(keys):
            state = states.get(key_id)
            if state is None:
                state = KeyState(project_id=project_ids[int(first_rows[code])])
            key_states.append(state)

        t = columns.t_ms[order]
        minute_s = t // MINUTE_MS * 60
        # The watermark each row meets: the key's state, then the running max of the rows
        # before it (segmented by key: the key code sits in the high bits).
        start_wm = np.fromiter([s.watermark_ms for s in key_states], np.int64, len(keys))
        shifted = sorted_codes << _TIME_BITS
        running = np.maximum.accumulate(shifted | np.clip(t, 0, _TIME_MAX))
        before = np.empty(n, np.int64)
        before[1:] = running[:-1]
        before -= shifted
        before[starts] = -1
        wm_before = np.maximum(before, start_wm[sorted_codes])
        late = minute_s * 1000 + (self.allowed_lateness_ms + MINUTE_MS) <= wm_before
        drop = np.zeros(n, bool)
        """Rows recognised as counted already: re-deliveries and repeated event ids."""

        ids = columns.event_int
        sorted_ids = [ids[i] for i in order.tolist()]
        if positions is not None:
            partitions = np.fromiter([p for p, _ in positions], np.int64, n)[order]
            offsets = np.fromiter([o for _, o in positions], np.int64, n)[order]
        # Re-delivered rows and ids already held by an open minute of the key's state.
        for code, state in enumerate(key_states):
            if not state.open_minutes and state.source is None:
                continue
            a, b = int(starts[code]), int(ends[code])
            open_minutes = state.open_minutes
            candidates = None
            if positions is not None and state.source is not None:
                partition, applied = state.source
                candidates = (partitions[a:b] == partition) & (offsets[a:b] <= applied)
            key_minutes = minute_s[a:b].tolist()
            key_late = late[a:b].tolist()
            for j in range(b - a):
                redelivered = candidates is not None and candidates[j]
                if key_late[j]:
                    if redelivered:
                        drop[a + j] = True  # closed minute, folded before: counted then
                    continue
                aggregate = open_minutes.get(key_minutes[j])
                if aggregate is None:
                    continue  # nothing of this minute was ever counted
                if redelivered and len(aggregate.event_ids) < aggregate.requests:
                    drop[a + j] = True  # ids forgotten (hot key): the offset decides
                elif sorted_ids[a + j] in aggregate.event_ids:
                    drop[a + j] = True
        # Repeated ids inside the batch: the first occurrence counts.
        if len(set(sorted_ids)) != n:
            seen: set[int] = set()
            for j, event_int in enumerate(sorted_ids):
                if event_int in seen:
                    drop[j] = True
                else:
                    seen.add(event_int)
        late_rows = late & ~drop
        fresh = ~late & ~drop
        result.duplicates = int(drop.sum())
        result.late_index = order[late_rows]

        # Per (key, minute) counts of the fresh rows, in one sort.
        fresh_pos = np.flatnonzero(fresh)
        f_codes = sorted_codes[fresh_pos]
        f_minutes = minute_s[fresh_pos]
        group_order = np.lexsort((f_minutes, f_codes))  # stable: arrival order inside a group
        g_pos = fresh_pos[group_order]
        g_rows = order[g_pos]
        result.accepted_index = order[fresh_pos]
        g_codes = f_codes[group_order]
        g_minutes = f_minutes[group_order]
        m = len(g_pos)
        if m:
            g_starts = np.flatnonzero(np.r_[True, (g_codes[1:] != g_codes[:-1]) | (g_minutes[1:] != g_minutes[:-1])])
            requests = np.diff(np.r_[g_starts, m]).tolist()
            errors = np.add.reduceat(columns.is_error[g_rows].astype(np.int64), g_starts).tolist()
            denials = np.add.reduceat(columns.is_denial[g_rows].astype(np.int64), g_starts).tolist()
            request_bytes = np.add.reduceat(columns.request_bytes[g_rows], g_starts).tolist()
            response_bytes = np.add.reduceat(columns.response_bytes[g_rows], g_starts).tolist()
            group_of_row = np.repeat(np.arange(len(g_starts)), np.diff(np.r_[g_starts, m]))
            outcome_counts = np.bincount(
                group_of_row * _OUTCOME_COUNT + columns.outcome_code[g_rows], minlength=len(g_starts) * _OUTCOME_COUNT
            ).reshape(-1, _OUTCOME_COUNT).tolist()
            group_codes = g_codes[g_starts].tolist()
            group_minutes = g_minutes[g_starts].tolist()
            g_start_list = g_starts.tolist() + [m]
            row_list = g_rows.tolist()
            ips = columns.client_ip
            group_ips = [ips[i] for i in row_list]
            group_ids = [ids[i] for i in row_list]
        else:
            group_codes = []

        # Last used per key: the newest fresh row, ties broken by the larger event id text.
        events_list = events
        touched_by_code: dict[int, list[int]] = {}
        for g, code in enumerate(group_codes):
            touched_by_code.setdefault(code, []).append(g)
        for code, groups in touched_by_code.items():
            key_id = keys[code]
            state = key_states[code]
            open_minutes = state.open_minutes
            for g in groups:
                minute = group_minutes[g]
                aggregate = open_minutes.get(minute)
                if aggregate is None:
                    aggregate = open_minutes[minute] = MinuteAggregate()
                lo, hi = g_start_list[g], g_start_list[g + 1]
                aggregate.requests += requests[g]
                aggregate.errors += errors[g]
                aggregate.denials += denials[g]
                aggregate.request_bytes += request_bytes[g]
                aggregate.response_bytes += response_bytes[g]
                aggregate.outcomes = [x + y for x, y in zip(aggregate.outcomes, outcome_counts[g], strict=True)]
                aggregate.ips.update(group_ips[lo:hi])
                aggregate.event_ids.update(group_ids[lo:hi])
                result.minutes.append(self._minute_usage(key_id, state.project_id, minute, aggregate))
            lo, hi = g_start_list[groups[0]], g_start_list[groups[-1] + 1]
            self._take_last_used(key_id, state, events_list, row_list[lo:hi], result)
            state.total_requests += hi - lo

        # Watermarks, closing, detectors, positions: once per key of the batch.
        key_ends_t = np.maximum.reduceat(np.clip(t, 0, _TIME_MAX), starts).tolist() if n else []
        if positions is not None:
            last_partition = partitions[ends - 1].tolist()
        for code, state in enumerate(key_states):
            key_id = keys[code]
            if key_ends_t[code] > state.watermark_ms and code in touched_by_code:
                state.watermark_ms = key_ends_t[code]
            closed = self._close_minutes(state)
            result.forgotten_event_ids += self._bound_dedupe_memory(state.open_minutes)
            if self.detectors:
                groups = touched_by_code.get(code)
                if groups:
                    lo, hi = g_start_list[groups[0]], g_start_list[groups[-1] + 1]
                    key_rows = sorted(row_list[lo:hi])
                    fresh_events = [events_list[i] for i in key_rows]
                else:
                    fresh_events = []
                for detector in self.detectors:
                    result.signals.extend(detector.observe(key_id, state, fresh_events, closed))
            if positions is not None:
                a, b = int(starts[code]), int(ends[code])
                partition = last_partition[code]
                newest = int(offsets[a:b][partitions[a:b] == partition].max())
                source = state.source
                if source is not None and source[0] == partition:
                    newest = max(newest, source[1])  # a re-delivered batch never moves it back
                state.source = (partition, newest)
            states[key_id] = state
        result.accepted = [events_list[i] for i in result.accepted_index.tolist()]
        result.late = [events_list[i] for i in result.late_index.tolist()]
        return result

    @staticmethod
    def _take_last_used(key_id: str, state: KeyState, events: Sequence[Any], rows: list[int],
                        result: BatchResult) -> None:
        """Move the key's last used to its newest row of `rows` if newer (ties: larger event id text)."""
        columns = result.columns
        assert columns is not None
        t_ms = columns.t_ms[rows]
        newest = int(t_ms.max())
        if newest < state.last_used_ms:
            return
        tied = [rows[j] for j in np.flatnonzero(t_ms == newest).tolist()]
        best = max(tied, key=lambda i: str(events[i].event_id))
        best_id = str(events[best].event_id)
        if newest == state.last_used_ms and best_id <= state.last_used_event_id:
            return
        event = events[best]
        state.last_used_ms = newest
        state.last_used_event_id = best_id
        state.last_used_ip = event.client_ip
        state.last_used_route = event.route
        state.last_used_service = event.service
        # Built from validated events, so the record is not validated again.
        result.last_used.append(
            LastUsed.model_construct(
                key_id=key_id,
                project_id=state.project_id,
                last_used_at=from_epoch_ms(newest),
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
