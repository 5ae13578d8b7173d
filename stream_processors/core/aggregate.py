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
from keytrail.stream_processors.core.stream_time import EMBEDDED_PARTITION, StreamTimes

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
_MINUTE_BITS = 31
"""Key-minute codes: the key's code above the minute number (minutes since epoch fit 31 bits to 6053)."""
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
class MinuteRows:
    """The minute rows of a batch as columns (row g = one key-minute); `MinuteUsage` objects on demand."""

    key_id: list[str]
    project_id: list[str]
    minute_start_s: np.ndarray
    requests: np.ndarray
    errors: np.ndarray
    denials: np.ndarray
    outcomes: np.ndarray
    """Shape (rows, len(OUTCOME_ORDER)): counts per outcome, in OUTCOME_ORDER."""
    distinct_ips: np.ndarray
    request_bytes: np.ndarray
    response_bytes: np.ndarray

    def __len__(self) -> int:
        return len(self.key_id)

    def usages(self) -> list[MinuteUsage]:
        """The rows as MinuteUsage objects (for tests, JSON sinks and small callers)."""
        names = _OUTCOME_NAMES
        return [
            MinuteUsage(key_id, project_id, minute, requests, errors, denials, dict(zip(names, outcomes, strict=True)),
                        distinct, request_bytes, response_bytes)
            for key_id, project_id, minute, requests, errors, denials, outcomes, distinct, request_bytes,
            response_bytes in zip(
                self.key_id, self.project_id, self.minute_start_s.tolist(), self.requests.tolist(),
                self.errors.tolist(), self.denials.tolist(), self.outcomes.tolist(), self.distinct_ips.tolist(),
                self.request_bytes.tolist(), self.response_bytes.tolist(), strict=True)
        ]


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
    minute_rows: MinuteRows | None = None
    """Full counts of every key-minute the batch touched, as columns."""
    last_used: list[LastUsed] = field(default_factory=list)
    signals: list[Signal] = field(default_factory=list)
    columns: EventColumns | None = None
    """The batch as columns (rows = the input events), for sinks that write Arrow."""
    accepted_index: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    """Rows of `columns` that are `accepted`, in the same order."""
    late_index: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    """Rows of `columns` that are `late`, in the same order."""
    _minutes: list[MinuteUsage] | None = None

    @property
    def minutes(self) -> list[MinuteUsage]:
        """`minute_rows` as MinuteUsage objects (built once, on first use)."""
        if self._minutes is None:
            self._minutes = self.minute_rows.usages() if self.minute_rows is not None else []
        return self._minutes


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
        stream: StreamTimes | None = None,
    ) -> BatchResult:
        """Fold a batch into the per-key states; each key's state is read and written once.

        The batch is handled as columns: lateness, dedupe, the per-(key, minute) counts, distinct
        IPs and last used are numpy operations over the whole batch. Python runs once per
        distinct key, and once per key-minute only where state is involved (a minute the key
        still holds open from an earlier batch, or one left open for the next) or a detector
        reads the closed minute; never once per event.

        `positions` (the Kafka partition and offset of each event, from the worker; the events of
        one envelope share its offset) make re-delivery after a crash or rebalance recognisable:
        a key's events all live in one partition, in offset order, and its state records the
        last offset it has folded, so anything at or below it may have been counted already.

        `stream` (the partitions' stream clocks): the batch moves its partitions' watermarks, and
        every key's open minutes the watermark has passed close at the end of the batch, also
        those of keys the batch does not hold (see `advance`).
        """
        result = BatchResult()
        n = len(events)
        if n == 0:
            return result
        columns = EventColumns.of(events)
        result.columns = columns
        lateness_and_minute = self.allowed_lateness_ms + MINUTE_MS

        # Keys: a code per distinct key id, rows grouped by key in arrival order.
        key_index: dict[str, int] = {}
        setdefault = key_index.setdefault
        codes = np.fromiter([setdefault(k, len(key_index)) for k in columns.key_id], np.int64, n)
        keys = list(key_index)
        key_count = len(keys)
        order = np.argsort(codes, kind="stable")
        sorted_codes = codes[order]
        starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
        ends = np.r_[starts[1:], n]
        first_rows = order[starts].tolist()
        project_ids = columns.project_id
        key_states: list[KeyState] = []
        for code, key_id in enumerate(keys):
            state = states.get(key_id)
            if state is None:
                state = KeyState(project_id=project_ids[first_rows[code]])
            key_states.append(state)

        # Lateness: the watermark each row meets is the key's state, then the running max of the
        # key's rows before it (a segmented running max: the key code sits in the high bits).
        t = columns.t_ms[order]
        minute_s = t // MINUTE_MS * 60
        start_wm = np.fromiter([s.watermark_ms for s in key_states], np.int64, key_count)
        closed_through = np.fromiter([s.closed_through_s for s in key_states], np.int64, key_count)
        shifted = sorted_codes << _TIME_BITS
        clipped = np.clip(t, 0, _TIME_MAX)
        running = np.maximum.accumulate(shifted | clipped)
        before = np.empty(n, np.int64)
        before[1:] = running[:-1]
        before -= shifted
        before[starts] = -1
        # A minute the key has closed already (its row is final) takes no more events either.
        row_closed = minute_s <= closed_through[sorted_codes]
        late = (minute_s * 1000 + lateness_and_minute <= np.maximum(before, start_wm[sorted_codes])) | row_closed

        # Dedupe: re-delivered rows, ids an open minute of the state holds, repeats in the batch.
        ids = columns.event_int
        drop = np.zeros(n, bool)
        if positions is not None:
            partitions = np.fromiter([p for p, _ in positions], np.int64, n)[order]
            offsets = np.fromiter([o for _, o in positions], np.int64, n)[order]
        # What the states hold: their open minutes (as key-minute codes) and those minutes' ids.
        held_pairs: list[int] = []
        incomplete_pairs: list[int] = []
        held_ids: set[int] = set()
        source_partition = np.full(key_count, -1, np.int64)
        source_offset = np.full(key_count, -1, np.int64)
        for code, state in enumerate(key_states):
            if state.source is not None and positions is not None:
                source_partition[code], source_offset[code] = state.source
            for minute, aggregate in state.open_minutes.items():
                pair = code << _MINUTE_BITS | minute // 60
                held_pairs.append(pair)
                if len(aggregate.event_ids) < aggregate.requests:
                    incomplete_pairs.append(pair)
                held_ids.update(aggregate.event_ids)
        held = np.array(held_pairs, np.int64)
        row_pairs = sorted_codes << _MINUTE_BITS | minute_s // 60
        if positions is not None:
            redelivered = (partitions == source_partition[sorted_codes]) & (offsets <= source_offset[sorted_codes])
            closed_at_start = (minute_s * 1000 + lateness_and_minute <= start_wm[sorted_codes]) | row_closed
            drop |= redelivered & closed_at_start  # closed minute, folded before: counted then
            if incomplete_pairs:  # ids forgotten (hot key): the offset decides
                drop |= redelivered & np.isin(row_pairs, np.array(incomplete_pairs, np.int64))
            # A re-delivered row is judged by the state as it was (counted then or not), even if
            # this batch's newer rows have since made it late; any other row only if on time.
            judged = ~late | redelivered
        else:
            judged = ~late
        if len(held):
            candidates = np.flatnonzero(judged & ~drop & np.isin(row_pairs, held))
            if len(candidates):
                candidate_rows = order[candidates].tolist()
                known = held_ids.__contains__
                for position, row in zip(candidates.tolist(), candidate_rows, strict=True):
                    if known(ids[row]):  # held by some open minute: is it this row's own minute?
                        state = key_states[int(sorted_codes[position])]
                        own = state.open_minutes.get(int(minute_s[position]))
                        if own is not None and ids[row] in own.event_ids:
                            drop[position] = True
        if len(set(ids)) != n:
            seen: set[int] = set()
            repeated = np.zeros(n, bool)
            for i, event_int in enumerate(ids):
                if event_int in seen:
                    repeated[i] = True
                else:
                    seen.add(event_int)
            drop |= repeated[order] & ~late  # a late row is late, repeated or not (as before)
        fresh = ~late & ~drop
        result.duplicates = int(drop.sum())
        result.late_index = order[late & ~drop]

        # Groups: the fresh rows by (key, minute), arrival order inside a group.
        fresh_pos = np.flatnonzero(fresh)
        result.accepted_index = order[fresh_pos]
        group_order = np.lexsort((minute_s[fresh_pos], sorted_codes[fresh_pos]))
        g_pos = fresh_pos[group_order]
        g_rows = order[g_pos]
        g_codes = sorted_codes[g_pos]
        g_minutes = minute_s[g_pos]
        m = len(g_pos)
        key_end_wm = np.maximum(start_wm, np.maximum.reduceat(clipped, starts))
        # Stream time: the batch moves its partitions' clocks; a key's minutes close on the later of
        # its own newest event and its partition's.
        key_partition = partitions[ends - 1] if positions is not None else np.full(key_count, EMBEDDED_PARTITION)
        key_close_wm = key_end_wm
        if stream is not None:
            row_partitions = partitions if positions is not None else None
            for partition in np.unique(key_partition).tolist():
                if row_partitions is None:
                    stream.observe(partition, int(clipped.max()))
                else:
                    stream.observe(partition, int(clipped[row_partitions == partition].max()))
            partition_ms = {p: c.stream_ms for p, c in stream.partitions.items()}
            key_close_wm = np.maximum(key_end_wm, np.fromiter(
                [partition_ms[p] for p in key_partition.tolist()], np.int64, key_count))
        signals = result.signals
        newest_closed = np.full(key_count, -1, np.int64)  # per key, the batch's newest minute that closes
        if m:
            g_starts = np.flatnonzero(np.r_[True, (g_codes[1:] != g_codes[:-1]) | (g_minutes[1:] != g_minutes[:-1])])
            group_count = len(g_starts)
            sizes = np.diff(np.r_[g_starts, m])
            group_of_row = np.repeat(np.arange(group_count), sizes)
            requests = sizes.astype(np.int64)
            errors = np.add.reduceat(columns.is_error[g_rows].astype(np.int64), g_starts)
            denials = np.add.reduceat(columns.is_denial[g_rows].astype(np.int64), g_starts)
            request_bytes = np.add.reduceat(columns.request_bytes[g_rows], g_starts)
            response_bytes = np.add.reduceat(columns.response_bytes[g_rows], g_starts)
            outcomes = np.bincount(group_of_row * _OUTCOME_COUNT + columns.outcome_code[g_rows],
                                   minlength=group_count * _OUTCOME_COUNT).reshape(group_count, _OUTCOME_COUNT)
            ip_index: dict[str, int] = {}
            ip_default = ip_index.setdefault
            ip_codes = np.fromiter([ip_default(ip, len(ip_index)) for ip in columns.client_ip], np.int64, n)
            pairs = np.unique(group_of_row * max(len(ip_index), 1) + ip_codes[g_rows])
            distinct_ips = np.bincount(pairs // max(len(ip_index), 1), minlength=group_count)
            group_codes = g_codes[g_starts]
            group_minutes = g_minutes[g_starts]
            stays_open = group_minutes * 1000 + lateness_and_minute > key_close_wm[group_codes]
            closing = ~stays_open
            np.maximum.at(newest_closed, group_codes[closing], group_minutes[closing])
            # Python per group only where state is involved, or a detector reads the closed minute.
            involved = stays_open | np.isin(group_codes << _MINUTE_BITS | group_minutes // 60, held) \
                if len(held) else stays_open.copy()
            wanted = np.flatnonzero(involved | bool(self.detectors)).tolist()
            closed_here: dict[int, list[tuple[int, MinuteAggregate]]] = {}
            if wanted:
                g_bounds = np.r_[g_starts, m].tolist()
                row_list = g_rows.tolist()
                ips = columns.client_ip
                codes_list = group_codes.tolist()
                minutes_list = group_minutes.tolist()
                open_list = stays_open.tolist()
                involved_list = involved.tolist()
                for g in wanted:
                    lo, hi = g_bounds[g], g_bounds[g + 1]
                    rows = row_list[lo:hi]
                    code = codes_list[g]
                    minute = minutes_list[g]
                    if not involved_list[g]:  # closes in this batch, never held: for the detectors only
                        closed_here.setdefault(code, []).append((minute, MinuteAggregate(
                            int(requests[g]), int(errors[g]), int(denials[g]), outcomes[g].tolist(),
                            {ips[i] for i in rows}, int(request_bytes[g]), int(response_bytes[g]), set())))
                        continue
                    open_minutes = key_states[code].open_minutes
                    aggregate = open_minutes.get(minute)
                    if aggregate is None:
                        aggregate = open_minutes[minute] = MinuteAggregate()
                    aggregate.requests += int(requests[g])
                    aggregate.errors += int(errors[g])
                    aggregate.denials += int(denials[g])
                    aggregate.request_bytes += int(request_bytes[g])
                    aggregate.response_bytes += int(response_bytes[g])
                    aggregate.outcomes = [x + y for x, y in zip(aggregate.outcomes, outcomes[g].tolist(), strict=True)]
                    aggregate.ips.update([ips[i] for i in rows])
                    aggregate.event_ids.update([ids[i] for i in rows])
                    # The row is the minute's full value: the state's counts, this batch included.
                    requests[g], errors[g], denials[g] = aggregate.requests, aggregate.errors, aggregate.denials
                    request_bytes[g], response_bytes[g] = aggregate.request_bytes, aggregate.response_bytes
                    outcomes[g] = aggregate.outcomes
                    distinct_ips[g] = len(aggregate.ips)
                    if not open_list[g]:
                        pass  # closed below by _close_minutes, with the state's other minutes
            result.minute_rows = MinuteRows(
                key_id=[keys[c] for c in group_codes.tolist()],
                project_id=[key_states[c].project_id for c in group_codes.tolist()],
                minute_start_s=group_minutes, requests=requests, errors=errors, denials=denials,
                outcomes=outcomes, distinct_ips=distinct_ips, request_bytes=request_bytes,
                response_bytes=response_bytes,
            )
            # Last used per key: the newest fresh row, ties broken by the larger event id text.
            g_t = t[g_pos]
            key_starts = np.flatnonzero(np.r_[True, g_codes[1:] != g_codes[:-1]])
            newest = np.maximum.reduceat(g_t, key_starts)
            key_sizes = np.diff(np.r_[key_starts, m])
            at_newest = np.flatnonzero(g_t == np.repeat(newest, key_sizes))
            touched_codes = g_codes[key_starts].tolist()
            fresh_counts = key_sizes.tolist()
            candidates: dict[int, list[int]] = {}
            for position, code in zip(at_newest.tolist(), g_codes[at_newest].tolist(), strict=True):
                candidates.setdefault(code, []).append(int(g_rows[position]))
            for code, newest_ms, count in zip(touched_codes, newest.tolist(), fresh_counts, strict=True):
                state = key_states[code]
                state.total_requests += count
                self._take_last_used(keys[code], state, events, candidates[code], newest_ms, result)
            fresh_rows_of: dict[int, tuple[int, int]] = {}
            bounds = np.r_[key_starts, m].tolist()
            for k, code in enumerate(touched_codes):
                fresh_rows_of[code] = (bounds[k], bounds[k + 1])
        else:
            fresh_rows_of = {}
            closed_here = {}

        # Watermarks, closing, detectors, positions: once per key of the batch.
        end_wm = key_end_wm.tolist()
        close_wm = key_close_wm.tolist()
        newest_closed_list = newest_closed.tolist()
        last_partition = key_partition.tolist()
        g_row_list = g_rows.tolist() if self.detectors and m else []
        views = self._distinct_views(columns, codes, result.accepted_index) if self.detectors and m else {}
        for code, state in enumerate(key_states):
            key_id = keys[code]
            span = fresh_rows_of.get(code)
            if span is not None:
                state.watermark_ms = end_wm[code]
            closed = self._close_minutes(state, close_wm[code])
            here = closed_here.get(code)
            if here:
                closed = sorted(closed + here, key=_minute_of) if closed else here
            newest = max(closed[-1][0] if closed else -1, newest_closed_list[code])
            if newest > state.closed_through_s:
                state.closed_through_s = newest
            if stream is not None:
                stream.of(last_partition[code]).index.note(key_id, state)
            result.forgotten_event_ids += self._bound_dedupe_memory(state.open_minutes)
            if self.detectors:
                fresh_events = [events[i] for i in sorted(g_row_list[span[0]:span[1]])] if span else []
                for detector, fields in self._detector_views:
                    seen = fresh_events if fields is None else [events[i] for i in views.get(fields, {}).get(code, ())]
                    signals.extend(detector.observe(key_id, state, seen, closed))
            if positions is not None:
                a, b = int(starts[code]), int(ends[code])
                partition = last_partition[code]
                newest_offset = int(offsets[a:b][partitions[a:b] == partition].max())
                source = state.source
                if source is not None and source[0] == partition:
                    newest_offset = max(newest_offset, source[1])  # a re-delivered batch never moves it back
                state.source = (partition, newest_offset)
            states[key_id] = state
        result.accepted = [events[i] for i in result.accepted_index.tolist()]
        result.late = [events[i] for i in result.late_index.tolist()]
        if stream is not None:
            signals.extend(self._close_due(states, stream))
        return result

    def advance(self, states: StateMapping, stream: StreamTimes) -> BatchResult:
        """Close the open minutes every partition's watermark has passed (after a live `tick`).

        Only keys with an open minute at or before the watermark are loaded: the work is per
        closed key-minute. Their detectors see the closed minutes (no new events); the minute
        rows were written when the minutes last changed, so they are final now.
        """
        result = BatchResult()
        result.signals.extend(self._close_due(states, stream))
        return result

    def _close_due(self, states: StateMapping, stream: StreamTimes) -> list[Signal]:
        signals: list[Signal] = []
        for partition, clock in stream.partitions.items():
            wm = clock.stream_ms
            for key_id in clock.index.due(stream.closing_horizon_s(partition)):
                state = states.get(key_id)
                if state is None:
                    continue
                closed = self._close_minutes(state, wm)
                clock.index.note(key_id, state)
                if not closed:
                    continue
                if closed[-1][0] > state.closed_through_s:
                    state.closed_through_s = closed[-1][0]
                for detector in self.detectors:
                    signals.extend(detector.observe(key_id, state, [], closed))
                states[key_id] = state
        return signals

    @property
    def _detector_views(self) -> list[tuple[Detector, tuple[str, ...] | None]]:
        return [(d, getattr(d, "distinct_events", None)) for d in self.detectors]

    def _distinct_views(self, columns: EventColumns, codes: np.ndarray, fresh_rows: np.ndarray,
                        ) -> dict[tuple[str, ...], dict[int, list[int]]]:
        """Per detector view: each key's first fresh row of every distinct (fields..., UTC day), in arrival order.

        A detector that only reacts to the first sighting of a value in a day (a network, a route)
        declares `distinct_events = (field, ...)` and gets those rows instead of all: what it
        would have skipped as "seen today" never reaches it, so its work is per distinct
        (key, value, day) of the batch, not per event.
        """
        views: dict[tuple[str, ...], dict[int, list[int]]] = {}
        rows = np.sort(fresh_rows)
        days = columns.t_ms[rows] // 86_400_000
        for _, fields in self._detector_views:
            if fields is None or fields in views:
                continue
            row_list = rows.tolist()
            field_codes = []
            for name in fields:
                values = columns.raw[name]
                index: dict[Any, int] = {}
                default = index.setdefault
                field_codes.append(np.fromiter([default(values[i], len(index)) for i in row_list], np.int64, len(rows)))
            key_codes = codes[rows]
            by = np.lexsort((np.arange(len(rows)), days, *reversed(field_codes), key_codes))
            k, d = key_codes[by], days[by]
            changed = (k[1:] != k[:-1]) | (d[1:] != d[:-1])
            for value_codes in field_codes:
                v = value_codes[by]
                changed |= v[1:] != v[:-1]
            first = np.r_[True, changed]
            chosen = np.sort(by[first])  # positions in arrival order
            per_key: dict[int, list[int]] = {}
            for position, code in zip(rows[chosen].tolist(), key_codes[chosen].tolist(), strict=True):
                per_key.setdefault(code, []).append(position)
            views[fields] = per_key
        return views

    @staticmethod
    def _take_last_used(key_id: str, state: KeyState, events: Sequence[Any], tied: list[int], newest: int,
                        result: BatchResult) -> None:
        """Move the key's last used to the newest of its fresh rows if newer (ties: larger event id text)."""
        if newest < state.last_used_ms:
            return
        best = tied[0] if len(tied) == 1 else max(tied, key=lambda i: str(events[i].event_id))
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

    def _close_minutes(self, state: KeyState, stream_ms: int = 0) -> list[tuple[int, MinuteAggregate]]:
        """Drop minutes past the allowed lateness (of the key's own newest event or its partition's
        stream time, whichever is later); their rows were already emitted."""
        horizon = max(state.watermark_ms, stream_ms) - self.allowed_lateness_ms - MINUTE_MS
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


def _minute_of(item: tuple[int, MinuteAggregate]) -> int:
    return item[0]
