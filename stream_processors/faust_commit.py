"""Keeping the worker's Kafka offsets honest around Faust's restart hand-off.

Three pieces, each for something seen in the crash test (kill -9, restart, exact counts):
`DeduplicatingAckConsumer` (Faust's commit computation, corrected), `DeliveryGapGuard` (offsets
the stream skipped are read from the broker and processed in order) and `CommitHoleWatch` (a
backstop for a commit stuck behind offsets nobody filled).

Faust records each acknowledged offset in a per-partition list and commits the end of the
first run of consecutive offsets in it. After a restart, Faust's recovery resumes the flow of
messages before it seeks the stream partitions back to their committed offsets, so the first
few thousand messages can reach the worker twice (once from each position). Both copies are
processed (the core skips the second by its Kafka offset) and both are acknowledged, and the
second copy's offset lands in that list again. With every offset of a range listed twice,
``[c-1, c, c, c+1, c+1, ...]``, the first consecutive run is two offsets long: the committed
offset then advances by one per commit interval (one per second) instead of to the end.
Observed in the crash test: the restarted worker processed everything and its committed
offsets stayed ~20k behind for as long as it ran (the same defect is reported upstream as
"Offsets not committed due to duplicate in _acked").

Nothing is lost either way (uncommitted events are re-read and skipped after a restart), but
consumer lag never drains, every restart re-reads the backlog, and lag alerts stay red.

The fix: before Faust computes the offset to commit, the list is made what Faust assumes it
is: sorted, without duplicates, and without offsets below the committed one (those are done).

A second defect in the same function loses events: Faust's committed offset is the next offset
to read, but its check for a hole at the head of the list still assumes it is the last one
read, so it lets a hole of exactly one offset through and commits past a message it never
acknowledged. Around a restart Faust can skip messages of a partition on their way to the
stream (seen in the crash test: 1 to 583 offsets per partition, at the restart boundary; with one,
that event was never counted). Here a hole at the head always holds the commit; the worker's
`DeliveryGapGuard` fills such skips from the broker as they happen, and `CommitHoleWatch` looks
for any hole left: real messages are re-read, offsets without a message (transaction markers,
compacted records) are passed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from confluent_kafka import Consumer, KafkaError, TopicPartition
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.types import TP
from faust.utils.functional import consecutive_numbers


def normalize_acked_offsets(acked: list[int], committed: int | None) -> None:
    """Rewrite `acked` in place: sorted, unique, and none below `committed`."""
    if not acked:
        return
    unique = sorted(set(acked))
    if committed is not None:
        unique = [offset for offset in unique if offset >= committed]
    acked[:] = unique


class DeduplicatingAckConsumer(AIOKafkaConsumer):
    """The aiokafka-driver consumer with Faust's commit computation corrected (see module doc)."""

    def _new_offset(self, tp: TP) -> int | None:
        acked = self._acked[tp]
        if not acked:
            return None
        gaps = self._gap[tp]
        if gaps:  # offsets Faust saw skipped in the fetch (or the hole watch found empty)
            up_to = max(acked) + 1
            for interval in gaps.overlap(0, up_to):
                acked.extend(range(interval.begin, interval.end))
                up_to = max(up_to, interval.end)
            gaps.chop(0, up_to)
        committed = self._committed_offset[tp]
        normalize_acked_offsets(acked, committed)
        self._acked_index[tp] = set(acked)
        if not acked or (committed is not None and acked[0] > committed):
            return None  # nothing new, or a hole at the head: the commit waits for it
        run = next(consecutive_numbers(acked))
        del acked[: len(run)]
        self._acked_index[tp].difference_update(run)
        return run[-1] + 1


def use_deduplicating_ack_consumer(app) -> None:  # noqa: ANN001 - a faust.App
    """Make `app` create its Kafka consumer from `DeduplicatingAckConsumer` (call before it starts)."""
    app.transport.Consumer = DeduplicatingAckConsumer


class CommitHoleWatch:
    """Finds partitions whose commit is stuck behind offsets the worker never received.

    Faust commits up to the first offset not acknowledged. If a message is lost between the
    fetch and the stream (seen around Faust's recovery hand-off), its offset is never
    acknowledged and the partition's commit stops there for good while later messages keep
    being processed. A hole that stays put for `patience` consecutive checks, with no message
    of it still in flight, is reported as (partition, committed offset, first acknowledged one).
    The worker then asks the broker what the hole holds (`offsets_holding_messages`): messages
    are re-read from the committed offset, which is safe because the core recognises what it
    already counted (event ids, Kafka offsets) and counts what it never saw; offsets without a
    message are recorded as a gap for the commit to pass.
    """

    def __init__(self, topics: str | set[str], patience: int = 3) -> None:
        self.topics = {topics} if isinstance(topics, str) else set(topics)
        self.patience = patience
        self._seen: dict[TP, tuple[int, int, int]] = {}  # tp -> (committed, first acked, times seen)

    def stuck_partitions(self, consumer) -> list[tuple[TP, int, int]]:  # noqa: ANN001 - a Faust consumer
        """(partition, committed offset, first acknowledged offset) of each hole to re-read now."""
        in_flight: dict[TP, int] = {}
        for message in list(consumer._unacked_messages):
            if message.tp.topic in self.topics and not message.acked:
                in_flight[message.tp] = min(in_flight.get(message.tp, message.offset), message.offset)
        stuck = []
        for tp in consumer.assignment():
            if tp.topic not in self.topics:
                continue
            committed = consumer._committed_offset.get(tp)
            acked = consumer._acked.get(tp)
            if committed is None or not acked:
                self._seen.pop(tp, None)
                continue
            first_acked = min(acked)
            if first_acked <= committed or in_flight.get(tp, first_acked) < first_acked:
                self._seen.pop(tp, None)  # no hole, or its start is still being processed
                continue
            before = self._seen.get(tp)
            times = before[2] + 1 if before is not None and before[:2] == (committed, first_acked) else 1
            if times >= self.patience:
                stuck.append((tp, committed, first_acked))
                self._seen.pop(tp, None)
            else:
                self._seen[tp] = (committed, first_acked, times)
        return stuck


def read_offset_range(bootstrap: str, topic: str, partition: int, start: int, end: int,
                      timeout_s: float = 30.0) -> list[tuple[int, bytes]] | None:
    """The (offset, value) of every message in [start, end) of a partition, straight from the broker.

    Offsets without a message (transaction markers, compacted records) are simply absent.
    None if the range could not be read in time.
    """
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "keytrail-gap-reader",
                         "enable.auto.commit": False, "enable.partition.eof": True,
                         "auto.offset.reset": "earliest", "isolation.level": "read_uncommitted"})
    found: list[tuple[int, bytes]] = []
    try:
        consumer.assign([TopicPartition(topic, partition, start)])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error() is not None:
                if message.error().code() == KafkaError._PARTITION_EOF:
                    return found
                continue
            if message.offset() >= end:
                return found
            if message.offset() >= start:
                found.append((message.offset(), message.value() or b""))
        return None
    finally:
        consumer.close()


def offsets_holding_messages(bootstrap: str, topic: str, partition: int, start: int, end: int,
                             timeout_s: float = 10.0) -> set[int] | None:
    """Which offsets in [start, end) of a partition hold a message (None if it could not be read)."""
    messages = read_offset_range(bootstrap, topic, partition, start, end, timeout_s)
    return None if messages is None else {offset for offset, _ in messages}


class DeliveryGapGuard:
    """Fills the offsets the stream skipped, so the worker processes every partition in order.

    Faust can hand the stream a partition's messages with a run of offsets missing (around its
    recovery hand-off it drops a fetch without acknowledging it; the crash test saw 10 to 315
    per partition). Processing the later messages first would close their minutes before the
    missing ones came back, and those would then be too late to count. So, per partition, the
    guard tracks the next offset this worker should see (from the committed offset, then each
    processed one); on a jump it reads the missing offsets straight from the broker and puts
    those messages in front of the one that jumped. Once the batch is done, the filled offsets
    are handed to Faust's commit as a gap (they have no Faust message to acknowledge).
    Re-delivered older messages always pass: the core recognises what it already counted.
    """

    def __init__(self, read: Callable[[int, int, int], list[tuple[int, bytes]] | None]) -> None:
        self.read = read
        """read(partition, start, end): the (offset, value) of each message in [start, end), None if unknown."""
        self.next_offset: dict[int, int] = {}
        self.filled = 0

    def reset(self) -> None:
        """Forget positions (after a rebalance the committed offsets are read again)."""
        self.next_offset.clear()

    def screen(
        self, positions: Sequence[tuple[int, int]], committed: Callable[[int], int | None]
    ) -> tuple[dict[int, list[tuple[int, bytes]]], dict[int, list[tuple[int, int]]]]:
        """For (partition, offset) pairs in delivery order, what to put in front of which.

        Returns ({index in `positions`: [(offset, value), ...] to process before it},
        {partition: [(start, end), ...] ranges filled}). A range the broker could not be read
        for is left alone (the commit then waits at it and `CommitHoleWatch` takes over).
        """
        fills: dict[int, list[tuple[int, bytes]]] = {}
        ranges: dict[int, list[tuple[int, int]]] = {}
        for index, (partition, offset) in enumerate(positions):
            expected = self.next_offset.get(partition)
            if expected is None:
                expected = committed(partition)
            if expected is not None and offset > expected:
                messages = self.read(partition, expected, offset)
                if messages:
                    fills[index] = messages
                    self.filled += len(messages)
                if messages is not None:
                    ranges.setdefault(partition, []).append((expected, offset))
            if expected is None or offset >= expected:
                self.next_offset[partition] = offset + 1
        return fills, ranges
