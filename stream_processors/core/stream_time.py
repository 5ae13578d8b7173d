"""Stream time: each partition's event-time watermark and the keys whose open minutes wait for it.

The watermark of a partition is the newest event time it has seen minus the allowed lateness.
A key's open minute closes when the watermark passes it, whether or not the key sends again:
`OpenMinuteIndex` keeps the keys with open minutes ordered by their oldest one (a heap), so
closing costs work per closed key-minute, never a walk over every key.

In a replay or backfill only event time moves a partition's clock. In live mode the worker (or
the embedded server) may also pass the wall clock in, `tick(now_ms)`: a partition that has been
quiet for the allowed lateness then advances to the wall clock. The core never reads a clock.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from keytrail.stream_processors.core.state import KeyState

EMBEDDED_PARTITION = 0
"""The one partition of the embedded ingest (and of batches processed without Kafka positions)."""


class OpenMinuteIndex:
    """Keys with open minutes, by their oldest open minute; stale heap entries are skipped lazily."""

    __slots__ = ("_heap", "_oldest")

    def __init__(self) -> None:
        self._heap: list[tuple[int, str]] = []
        self._oldest: dict[str, int] = {}

    def note(self, key_id: str, state: KeyState) -> None:
        """Record the key's open minutes as they are now (none: the key leaves the index)."""
        if not state.open_minutes:
            self._oldest.pop(key_id, None)
            return
        oldest = min(state.open_minutes)
        if self._oldest.get(key_id) != oldest:
            self._oldest[key_id] = oldest
            heapq.heappush(self._heap, (oldest, key_id))

    def due(self, horizon_minute_s: int) -> list[str]:
        """Keys whose oldest open minute starts at or before `horizon_minute_s`; they leave the index."""
        heap, oldest = self._heap, self._oldest
        found: list[str] = []
        while heap and heap[0][0] <= horizon_minute_s:
            minute, key_id = heapq.heappop(heap)
            if oldest.get(key_id) == minute:
                del oldest[key_id]
                found.append(key_id)
        return found

    def oldest_minute(self) -> int | None:
        """Start of the oldest open minute of any indexed key (None: nothing open)."""
        heap, oldest = self._heap, self._oldest
        while heap and oldest.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def __len__(self) -> int:
        return len(self._oldest)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._oldest


class PartitionClock:
    """One partition's stream time (newest event time seen, ms) and its index of open minutes."""

    __slots__ = ("event_ms", "index", "last_arrival_ms", "stream_ms")

    def __init__(self) -> None:
        self.stream_ms = 0
        """What closes minutes: the newest event time, or the wall clock of a quiet partition (live)."""
        self.event_ms = 0
        """The newest event time seen, never the wall clock: what event-time evaluations read."""
        self.index = OpenMinuteIndex()
        self.last_arrival_ms: int | None = None
        """Wall clock of the last batch with events (live mode only; None in a replay)."""


class StreamTimes:
    """The stream clocks of the partitions one process owns; give it to `UsageAggregator.process`.

    `live=False` (replay, backfill, tests): only event times move the clocks, so the same events
    give the same closings and signals whatever the wall clock says. `live=True`: `arrived(now)`
    after each batch and `tick(now)` on a timer let a quiet partition follow the wall clock.
    """

    def __init__(self, allowed_lateness_s: int = 300, *, live: bool = False) -> None:
        self.allowed_lateness_ms = allowed_lateness_s * 1000
        self.live = live
        self.partitions: dict[int, PartitionClock] = {}

    def of(self, partition: int) -> PartitionClock:
        clock = self.partitions.get(partition)
        if clock is None:
            clock = self.partitions[partition] = PartitionClock()
        return clock

    def observe(self, partition: int, newest_event_ms: int) -> None:
        """Events up to `newest_event_ms` were seen in `partition`."""
        clock = self.of(partition)
        if newest_event_ms > clock.stream_ms:
            clock.stream_ms = newest_event_ms
        if newest_event_ms > clock.event_ms:
            clock.event_ms = newest_event_ms

    def watermark_ms(self, partition: int = EMBEDDED_PARTITION) -> int:
        """Newest event time seen in the partition minus the allowed lateness."""
        return self.of(partition).stream_ms - self.allowed_lateness_ms

    def event_watermark_ms(self, partition: int = EMBEDDED_PARTITION) -> int:
        """The watermark of event times alone (the wall clock of live mode left out)."""
        return self.of(partition).event_ms - self.allowed_lateness_ms

    def closing_horizon_s(self, partition: int) -> int:
        """Minutes starting at or before this (epoch seconds) are past the watermark: they close."""
        return (self.watermark_ms(partition) - 60_000) // 1000

    def arrived(self, partitions: Iterable[int], now_ms: int) -> None:
        """Live mode: these partitions delivered events at wall time `now_ms`."""
        if self.live:
            for partition in partitions:
                self.of(partition).last_arrival_ms = now_ms

    def tick(self, now_ms: int) -> list[int]:
        """Live mode: a partition quiet for the allowed lateness advances to the wall clock; returns them."""
        if not self.live:
            return []
        moved = []
        for partition, clock in self.partitions.items():
            if clock.last_arrival_ms is None:  # first look (a start, a rebalance): quiet from now on, if it stays so
                clock.last_arrival_ms = now_ms
                continue
            quiet = now_ms - clock.last_arrival_ms >= self.allowed_lateness_ms
            if quiet and now_ms > clock.stream_ms:
                clock.stream_ms = now_ms
                moved.append(partition)
        return moved

    def rebuild(self, partition: int, states: Iterable[tuple[str, KeyState]]) -> None:
        """After a restart or a partition handed over: the clock and index from the stored states."""
        clock = self.partitions[partition] = PartitionClock()
        for key_id, state in states:
            if state.watermark_ms > clock.stream_ms:
                clock.stream_ms = clock.event_ms = state.watermark_ms
            clock.index.note(key_id, state)

    def drop(self, partition: int) -> None:
        """The partition went to another worker."""
        self.partitions.pop(partition, None)
