"""Stream time: a partition's watermark closes every key's open minutes, quiet keys included (issue 18)."""

from __future__ import annotations

from datetime import timedelta

from keytrail.stream_processors.core import UsageAggregator
from keytrail.stream_processors.core.stream_time import OpenMinuteIndex, StreamTimes
from keytrail.stream_processors.state_stores import InMemoryStates
from tests.factories import BASE_TIME, usage_event

MINUTE_S = int(BASE_TIME.timestamp()) // 60 * 60


class ClosedMinutes:
    """A detector that records the minutes the core hands it as closed."""

    name = "closed_minutes_probe"

    def __init__(self) -> None:
        self.closed: list[tuple[str, int, int]] = []

    def observe(self, key_id, state, events, closed_minutes):  # noqa: ANN001
        self.closed.extend((key_id, minute, aggregate.requests) for minute, aggregate in closed_minutes)
        return []


class CountingStates(InMemoryStates):
    """States that count how often the core loads one."""

    def __init__(self) -> None:
        super().__init__()
        self.loads = 0

    def get(self, key, default=None):  # noqa: ANN001
        self.loads += 1
        return super().get(key, default)


def _quiet_key_then_others(stream: StreamTimes | None):
    probe = ClosedMinutes()
    core = UsageAggregator(allowed_lateness_s=300, detectors=[probe])
    states = InMemoryStates()
    core.process([usage_event("quiet", seconds=s) for s in (1, 2, 3)], states, stream=stream)
    # Only another key keeps sending, ten minutes on: the quiet key never sends again.
    core.process([usage_event("busy", seconds=600 + s) for s in range(5)], states, stream=stream)
    return probe, states, core


def test_a_quiet_keys_last_minute_closes_when_the_watermark_passes_it():
    probe, states, _ = _quiet_key_then_others(StreamTimes(300))
    assert ("quiet", MINUTE_S, 3) in probe.closed
    assert states["quiet"].open_minutes == {}
    assert states["quiet"].closed_through_s == MINUTE_S


def test_without_stream_time_the_quiet_key_keeps_its_minute_open():
    """What it did before: minutes closed only when the same key sent again."""
    probe, states, _ = _quiet_key_then_others(None)
    assert probe.closed == [] and MINUTE_S in states["quiet"].open_minutes


def test_an_event_for_a_closed_minute_is_late_and_not_counted_twice():
    stream = StreamTimes(300)
    _, states, core = _quiet_key_then_others(stream)
    again = core.process([usage_event("quiet", seconds=4)], states, stream=stream)
    assert len(again.late) == 1 and again.accepted == [] and again.minutes == []
    # A newer event of the same key is on time: the key has not moved past it.
    newer = core.process([usage_event("quiet", seconds=300)], states, stream=stream)
    assert len(newer.accepted) == 1 and newer.last_used


def test_the_watermark_is_the_newest_event_time_minus_the_allowed_lateness():
    stream = StreamTimes(300)
    core = UsageAggregator(300)
    core.process([usage_event("a", seconds=100), usage_event("b", seconds=40)], InMemoryStates(), stream=stream)
    assert stream.watermark_ms() == int((BASE_TIME + timedelta(seconds=100)).timestamp() * 1000) - 300_000


def test_minutes_close_at_the_watermark_not_before():
    probe = ClosedMinutes()
    core = UsageAggregator(allowed_lateness_s=300, detectors=[probe])
    stream, states = StreamTimes(300), InMemoryStates()
    core.process([usage_event("quiet", seconds=1)], states, stream=stream)
    # The minute [0, 60 s) closes when the watermark reaches its end: stream time 60 s + 300 s.
    core.process([usage_event("busy", seconds=359)], states, stream=stream)
    assert probe.closed == []
    core.process([usage_event("busy", seconds=360)], states, stream=stream)
    assert probe.closed == [("quiet", MINUTE_S, 1)]


def test_closing_loads_only_keys_with_a_minute_to_close():
    core = UsageAggregator(allowed_lateness_s=300)
    stream, states = StreamTimes(300), CountingStates()
    core.process([usage_event(f"k{i}", seconds=1) for i in range(500)], states, stream=stream)
    core.process([usage_event("busy", seconds=400)], states, stream=stream)  # closes the 500 keys' minutes
    assert all(states[f"k{i}"].open_minutes == {} for i in range(500))
    states.loads = 0
    core.process([usage_event("busy", seconds=500 + s) for s in range(50)], states, stream=stream)
    assert states.loads <= 2  # the batch's own key; the 500 closed keys are not visited again


def test_replay_mode_ignores_the_wall_clock_and_live_mode_follows_it_when_quiet():
    core = UsageAggregator(allowed_lateness_s=300)
    start_ms = int(BASE_TIME.timestamp() * 1000)
    for live, closes in ((False, False), (True, True)):
        stream, states = StreamTimes(300, live=live), InMemoryStates()
        core.process([usage_event("quiet", seconds=1)], states, stream=stream)
        stream.arrived([0], now_ms=start_ms + 2_000)
        assert stream.tick(now_ms=start_ms + 200_000) == []  # live: not quiet for the lateness yet
        stream.tick(now_ms=start_ms + 3_600_000)
        core.advance(states, stream)
        assert (states["quiet"].open_minutes == {}) is closes


def test_a_busy_partition_does_not_follow_the_wall_clock():
    stream = StreamTimes(300, live=True)
    stream.observe(0, 1_000_000)
    stream.arrived([0], now_ms=5_000_000)
    assert stream.tick(now_ms=5_100_000) == [] and stream.of(0).stream_ms == 1_000_000


def test_partitions_keep_their_own_watermarks():
    probe = ClosedMinutes()
    core = UsageAggregator(allowed_lateness_s=300, detectors=[probe])
    stream, states = StreamTimes(300), InMemoryStates()
    core.process([usage_event("p1_key", seconds=1)], states, [(1, 0)], stream=stream)
    core.process([usage_event("p0_key", seconds=3600)], states, [(0, 0)], stream=stream)
    assert probe.closed == []  # partition 0 moving on closes nothing of partition 1
    core.process([usage_event("p1_other", seconds=3600)], states, [(1, 1)], stream=stream)
    assert ("p1_key", MINUTE_S, 1) in probe.closed


def test_the_index_hands_out_each_key_once_by_its_oldest_open_minute():
    from keytrail.stream_processors.core.state import KeyState, MinuteAggregate

    index = OpenMinuteIndex()
    index.note("a", KeyState(open_minutes={120: MinuteAggregate(), 180: MinuteAggregate()}))
    index.note("b", KeyState(open_minutes={60: MinuteAggregate()}))
    index.note("a", KeyState(open_minutes={60: MinuteAggregate()}))  # an older minute opened (late event)
    assert index.oldest_minute() == 60
    assert sorted(index.due(100)) == ["a", "b"] and index.due(10_000) == [] and len(index) == 0
