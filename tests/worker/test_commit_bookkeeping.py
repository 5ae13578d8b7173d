"""The worker's Kafka commits reach the end of what it acknowledged, even when a restart
delivered (and acknowledged) a range of offsets twice."""

from __future__ import annotations

from collections import defaultdict

import pytest
from faust.transport.drivers.aiokafka import Consumer as FaustConsumer
from faust.types import TP
from intervaltree import IntervalTree

from keytrail.stream_processors.faust_commit import (
    CommitHoleWatch,
    DeduplicatingAckConsumer,
    DeliveryGapGuard,
    normalize_acked_offsets,
)

USAGE_0 = TP("keytrail.usage.v1", 0)


def bookkeeping_only(consumer_class: type, acked: list[int], committed: int | None):
    """A consumer object holding only the ack bookkeeping `_new_offset` reads (no broker)."""
    consumer = object.__new__(consumer_class)
    consumer._gap = defaultdict(IntervalTree)
    consumer._acked = defaultdict(list, {USAGE_0: list(acked)})
    consumer._acked_index = defaultdict(set, {USAGE_0: set(acked)})
    consumer._committed_offset = defaultdict(lambda: None, {USAGE_0: committed})
    return consumer


# What the restarted worker's consumer held in the crash test: committed at 16900, the
# offsets from there on acknowledged twice (once per delivery), then once.
AFTER_RESTART = [16899, *[o for o in range(16900, 18000) for _copy in (1, 2)], *range(18000, 20514)]


def test_faust_itself_advances_one_offset_per_commit_on_this_state():
    """The defect, shown on Faust's own consumer: the commit crawls (one offset per round)."""
    consumer = bookkeeping_only(FaustConsumer, AFTER_RESTART, committed=16900)
    assert consumer._new_offset(USAGE_0) == 16901


def test_deduplicating_consumer_commits_everything_acknowledged():
    consumer = bookkeeping_only(DeduplicatingAckConsumer, AFTER_RESTART, committed=16900)
    assert consumer._new_offset(USAGE_0) == 20514
    assert consumer._acked[USAGE_0] == []


def test_faust_itself_commits_past_a_one_offset_hole_at_the_head():
    """The losing defect, on Faust's own consumer: offset 100 (the next to read) was never
    acknowledged, yet Faust commits through it, and the event is gone for good."""
    consumer = bookkeeping_only(FaustConsumer, list(range(101, 200)), committed=100)
    assert consumer._new_offset(USAGE_0) == 200


def test_a_hole_at_the_head_holds_the_commit():
    consumer = bookkeeping_only(DeduplicatingAckConsumer, list(range(101, 200)), committed=100)
    assert consumer._new_offset(USAGE_0) is None
    assert consumer._acked[USAGE_0] == list(range(101, 200)), "kept for when the hole fills"
    consumer._acked[USAGE_0].append(100)
    assert consumer._new_offset(USAGE_0) == 200


def test_offsets_known_to_hold_no_message_are_committed_past():
    consumer = bookkeeping_only(DeduplicatingAckConsumer, list(range(105, 111)), committed=100)
    consumer._gap[USAGE_0].addi(100, 105)  # what the hole watch records for transaction markers
    assert consumer._new_offset(USAGE_0) == 111
    assert not consumer._gap[USAGE_0]


def test_a_hole_still_stops_the_commit_at_the_hole():
    """An offset never acknowledged (still being processed) must not be committed past."""
    acked = [o for o in range(100, 200) if o != 150] + list(range(120, 140))
    consumer = bookkeeping_only(DeduplicatingAckConsumer, acked, committed=100)
    assert consumer._new_offset(USAGE_0) == 150
    assert consumer._new_offset(USAGE_0) is None  # 150 is missing: nothing more to commit


def test_nothing_acknowledged_after_the_committed_offset_commits_nothing():
    consumer = bookkeeping_only(DeduplicatingAckConsumer, [5, 6, 7], committed=10)
    assert consumer._new_offset(USAGE_0) is None


@pytest.mark.parametrize(
    ("acked", "committed", "expected"),
    [
        ([3, 1, 2, 2, 1], None, [1, 2, 3]),
        ([9, 10, 10, 11], 10, [10, 11]),
        ([], 4, []),
        ([1, 2], 5, []),
    ],
)
def test_normalize_acked_offsets(acked, committed, expected):
    normalize_acked_offsets(acked, committed)
    assert acked == expected


class FakeMessage:
    def __init__(self, tp: TP, offset: int) -> None:
        self.tp, self.offset, self.acked = tp, offset, False


class BookkeepingConsumer:
    """The parts of a Faust consumer CommitHoleWatch reads."""

    def __init__(self, committed: int, acked: list[int], in_flight: list[int] = ()) -> None:
        self._committed_offset = {USAGE_0: committed}
        self._acked = {USAGE_0: list(acked)}
        self._unacked_messages = {FakeMessage(USAGE_0, offset) for offset in in_flight}

    def assignment(self) -> set[TP]:
        return {USAGE_0, TP("keytrail.keys.v1", 0)}


def test_a_hole_that_stays_is_reported_once_with_the_offset_to_reread_from():
    watch = CommitHoleWatch("keytrail.usage.v1", patience=3)
    consumer = BookkeepingConsumer(committed=18463, acked=list(range(18616, 20000)))
    assert watch.stuck_partitions(consumer) == []
    assert watch.stuck_partitions(consumer) == []
    assert watch.stuck_partitions(consumer) == [(USAGE_0, 18463, 18616)]
    assert watch.stuck_partitions(consumer) == [], "the count starts again after a report"


def test_a_hole_still_being_processed_is_left_alone():
    watch = CommitHoleWatch("keytrail.usage.v1", patience=2)
    consumer = BookkeepingConsumer(committed=100, acked=list(range(150, 200)), in_flight=[100, 101])
    for _ in range(5):
        assert watch.stuck_partitions(consumer) == []


def test_a_commit_that_moves_is_not_stuck():
    watch = CommitHoleWatch("keytrail.usage.v1", patience=2)
    assert watch.stuck_partitions(BookkeepingConsumer(committed=100, acked=[150, 151])) == []
    assert watch.stuck_partitions(BookkeepingConsumer(committed=120, acked=[150, 151])) == []
    assert watch.stuck_partitions(BookkeepingConsumer(committed=150, acked=[150, 151])) == []
    assert watch.stuck_partitions(BookkeepingConsumer(committed=150, acked=[])) == []


class FakeBroker:
    """What reading [start, end) of a partition returns: every offset but the markers."""

    def __init__(self, markers: set[int] = frozenset(), unreachable: bool = False) -> None:
        self.markers, self.unreachable, self.calls = markers, unreachable, []

    def __call__(self, partition: int, start: int, end: int) -> list[tuple[int, bytes]] | None:
        self.calls.append((partition, start, end))
        if self.unreachable:
            return None
        return [(o, f"p{partition}-{o}".encode()) for o in range(start, end) if o not in self.markers]


def committed_at(offsets: dict[int, int]):
    return lambda partition: offsets.get(partition)


def test_in_order_delivery_from_the_committed_offset_reads_nothing_extra():
    broker = FakeBroker()
    guard = DeliveryGapGuard(broker)
    fills, ranges = guard.screen([(0, 100), (1, 7), (0, 101), (1, 8)], committed_at({0: 100, 1: 7}))
    assert fills == {} and ranges == {} and broker.calls == []


def test_offsets_the_stream_skipped_are_read_and_put_in_front_in_order():
    """What Faust did in the crash test: after 17460-17471 the stream jumped to 17775."""
    broker = FakeBroker()
    guard = DeliveryGapGuard(broker)
    delivered = [(2, o) for o in range(17460, 17472)] + [(0, 500), (2, 17775), (2, 17776)]
    fills, ranges = guard.screen(delivered, committed_at({2: 17460, 0: 500}))
    jump = delivered.index((2, 17775))
    assert list(fills) == [jump]
    assert [offset for offset, _ in fills[jump]] == list(range(17472, 17775))
    assert fills[jump][0][1] == b"p2-17472"
    assert ranges == {2: [(17472, 17775)]}
    assert guard.filled == 303
    fills, ranges = guard.screen([(2, 17777)], committed_at({2: 17460}))
    assert fills == {} and ranges == {}, "in order again"


def test_a_first_delivery_past_the_committed_offset_is_filled_from_it():
    guard = DeliveryGapGuard(FakeBroker())
    fills, ranges = guard.screen([(3, 20)], committed_at({3: 15}))
    assert [o for o, _ in fills[0]] == [15, 16, 17, 18, 19] and ranges == {3: [(15, 20)]}


def test_markers_in_a_gap_are_committed_past_without_messages():
    guard = DeliveryGapGuard(FakeBroker(markers={10, 11}))
    fills, ranges = guard.screen([(0, 12)], committed_at({0: 10}))
    assert fills == {} and ranges == {0: [(10, 12)]}


def test_an_unreadable_gap_is_left_to_the_commit_hole_watch():
    guard = DeliveryGapGuard(FakeBroker(unreachable=True))
    fills, ranges = guard.screen([(0, 15), (0, 16)], committed_at({0: 10}))
    assert fills == {} and ranges == {}, "nothing claimed: the commit keeps waiting at 10"


def test_re_deliveries_of_older_offsets_always_pass_without_reading():
    broker = FakeBroker()
    guard = DeliveryGapGuard(broker)
    committed = committed_at({0: 100})
    guard.screen([(0, 100), (0, 101), (0, 102)], committed)
    fills, _ = guard.screen([(0, 100), (0, 101), (0, 102), (0, 103)], committed)
    assert fills == {} and broker.calls == []


def test_without_a_committed_offset_the_first_delivery_sets_the_position():
    guard = DeliveryGapGuard(FakeBroker())
    fills, _ = guard.screen([(3, 42), (3, 43)], committed_at({}))
    assert fills == {}
    guard.reset()
    fills, _ = guard.screen([(3, 44)], committed_at({3: 44}))
    assert fills == {}


def test_filled_ranges_let_the_commit_pass_them():
    """The worker records a filled range as a gap once the batch is durable; the commit passes it."""
    consumer = bookkeeping_only(DeduplicatingAckConsumer, list(range(17460, 17472)) + [17775, 17776], committed=17460)
    assert consumer._new_offset(USAGE_0) == 17472, "held at the skipped offsets"
    consumer._acked[USAGE_0] = [17775, 17776]
    consumer._committed_offset[USAGE_0] = 17472
    consumer._gap[USAGE_0].addi(17472, 17775)
    assert consumer._new_offset(USAGE_0) == 17777
