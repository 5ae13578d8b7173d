"""The pure core: last used, per-minute counts, dedupe and lateness."""

import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from keytrail.schemas.usage import Outcome
from keytrail.stream_processors.core import KeyState, UsageAggregator
from keytrail.stream_processors.core.clock import epoch_ms
from keytrail.stream_processors.state_stores import InMemoryStates
from tests.factories import BASE_TIME, usage_event


def test_counts_each_event_once_per_minute_and_key():
    core = UsageAggregator(allowed_lateness_s=300)
    states = InMemoryStates()
    events = [usage_event("key_a", seconds=s) for s in (0, 10, 70)] + [usage_event("key_b", seconds=5)]
    result = core.process(events, states)
    by_minute = {(m.key_id, m.minute_start_s): m.requests for m in result.minutes}
    minute0 = epoch_ms(BASE_TIME) // 1000
    assert by_minute == {("key_a", minute0): 2, ("key_a", minute0 + 60): 1, ("key_b", minute0): 1}
    assert states["key_a"].total_requests == 3


def test_duplicated_event_id_is_counted_once_even_across_batches():
    core = UsageAggregator()
    states = InMemoryStates()
    event = usage_event(seconds=1)
    first = core.process([event, event], states)
    second = core.process([event], states)
    assert first.duplicates == 1 and second.duplicates == 1
    assert [m.requests for m in first.minutes] == [1]
    assert second.minutes == [] and second.accepted == []
    assert states["key_a"].total_requests == 1


def test_late_event_never_moves_last_used_back():
    core = UsageAggregator()
    states = InMemoryStates()
    newest = usage_event(seconds=100, client_ip="10.0.0.9")
    core.process([newest], states)
    result = core.process([usage_event(seconds=50, client_ip="10.0.0.1")], states)
    assert result.last_used == []
    assert states["key_a"].last_used_ip == "10.0.0.9"
    assert states["key_a"].last_used_ms == epoch_ms(newest.occurred_at)


def test_event_later_than_allowed_lateness_is_kept_for_audit_but_not_counted():
    core = UsageAggregator(allowed_lateness_s=60)
    states = InMemoryStates()
    core.process([usage_event(seconds=3600)], states)
    result = core.process([usage_event(seconds=0)], states)
    assert len(result.late) == 1 and result.accepted == [] and result.minutes == []


def test_late_event_within_lateness_updates_its_own_minute_with_full_counts():
    core = UsageAggregator(allowed_lateness_s=300)
    states = InMemoryStates()
    core.process([usage_event(seconds=5), usage_event(seconds=130)], states)
    result = core.process([usage_event(seconds=20)], states)
    assert [(m.minute_start_s % 3600, m.requests, m.revision) for m in result.minutes] == [(0, 2, 2)]


def test_outcomes_errors_denials_and_distinct_ips_are_counted():
    core = UsageAggregator()
    events = [
        usage_event(outcome=Outcome.OK, client_ip="10.0.0.1"),
        usage_event(outcome=Outcome.DENIED, status=403, client_ip="10.0.0.2"),
        usage_event(outcome=Outcome.ERROR, status=500, client_ip="10.0.0.2"),
        usage_event(outcome=Outcome.OK, status=502, client_ip="2001:db8::1"),
    ]
    (minute,) = core.process(events, InMemoryStates()).minutes
    assert (minute.requests, minute.errors, minute.denials, minute.distinct_ips) == (4, 2, 1, 3)
    assert minute.outcomes["ok"] == 2 and minute.outcomes["denied"] == 1 and minute.outcomes["error"] == 1


def test_state_round_trips_through_bytes():
    core = UsageAggregator()
    states = InMemoryStates()
    core.process([usage_event(seconds=s, client_ip=f"10.0.0.{s}") for s in range(5)], states)
    state = states["key_a"]
    assert KeyState.from_bytes(state.to_bytes()) == state


@settings(max_examples=60, deadline=None)
@given(
    offsets=st.lists(st.integers(min_value=0, max_value=900), min_size=1, max_size=40),
    batch_size=st.integers(min_value=1, max_value=10),
    redeliver=st.integers(min_value=0, max_value=39),
)
def test_batching_and_redelivery_never_change_the_final_answer(offsets, batch_size, redeliver):
    """However the stream is cut into batches, and whatever is delivered twice, results are the same."""
    events = [usage_event(seconds=s, event_id=uuid.UUID(int=i + 1)) for i, s in enumerate(offsets)]
    core = UsageAggregator(allowed_lateness_s=3600)

    reference_states = InMemoryStates()
    reference = core.process(events, reference_states)
    expected = {m.minute_start_s: m.requests for m in reference.minutes}

    states = InMemoryStates()
    latest: dict[int, int] = {}
    delivered = events + events[: redeliver % len(events)]
    for start in range(0, len(delivered), batch_size):
        for minute in core.process(delivered[start : start + batch_size], states).minutes:
            latest[minute.minute_start_s] = max(latest.get(minute.minute_start_s, 0), minute.revision)
    assert latest == expected
    assert states["key_a"].last_used_ms == reference_states["key_a"].last_used_ms


def test_a_hot_keys_dedupe_memory_is_bounded_and_counts_stay_exact():
    core = UsageAggregator(300, max_event_ids_per_key=50)
    states = InMemoryStates()
    events = [usage_event("hot", seconds=minute * 60 + n * 0.5) for minute in range(3) for n in range(40)]
    result = core.process(events, states)
    minutes = states["hot"].open_minutes
    assert sum(len(m.event_ids) for m in minutes.values()) <= 50
    assert len(minutes[max(minutes)].event_ids) == 40, "the newest minute keeps its ids"
    assert result.forgotten_event_ids == 80
    assert [m.requests for m in result.minutes] == [40, 40, 40]
    again = core.process([events[-1]], states)
    assert again.duplicates == 1 and not again.minutes


def test_redelivered_offsets_are_not_counted_again_even_after_the_id_memory_forgot_them():
    core = UsageAggregator(300, max_event_ids_per_key=10)
    states = InMemoryStates()
    events = [usage_event("hot", seconds=n) for n in range(150)]  # three minutes, ids trimmed to 10
    positions = [(3, 1000 + n) for n in range(150)]
    first = core.process(events, states, positions)
    assert first.forgotten_event_ids > 0
    assert states["hot"].source == (3, 1149)
    # A crash before the consumer committed: the whole range comes again, in two batches.
    again = core.process(events[:70], states, positions[:70])
    again2 = core.process(events[70:], states, positions[70:])
    assert again.duplicates + again2.duplicates == 150
    assert not again.minutes and not again2.minutes
    assert states["hot"].source == (3, 1149), "a re-delivered batch never moves the position back"
    assert states["hot"].total_requests == 150
    later = core.process([usage_event("hot", seconds=151)], states, [(3, 1150)])
    assert later.duplicates == 0 and states["hot"].total_requests == 151


def test_the_same_event_at_a_new_offset_is_still_caught_by_its_id():
    core, states = UsageAggregator(300), InMemoryStates()
    event = usage_event("k", seconds=1)
    core.process([event], states, [(0, 5)])
    result = core.process([event], states, [(0, 9)])  # a producer re-sent it
    assert result.duplicates == 1 and states["k"].total_requests == 1


def test_an_event_delivered_after_a_later_offset_is_still_counted():
    """The consumer skipped offsets 5-6 and delivered 7 first; when 5-6 come (after a re-seek or
    a restart) they are below the key's folded offset but were never counted: they count now."""
    core, states = UsageAggregator(300), InMemoryStates()
    events = [usage_event("k", seconds=n) for n in range(4)]
    core.process([events[0], events[3]], states, [(0, 4), (0, 7)])
    assert states["k"].source == (0, 7)
    skipped = core.process([events[0], events[1], events[2], events[3]], states, [(0, 4), (0, 5), (0, 6), (0, 7)])
    assert skipped.duplicates == 2
    assert [m.requests for m in skipped.minutes] == [4]
    assert states["k"].total_requests == 4
    assert states["k"].source == (0, 7)


def test_below_the_folded_offset_a_closed_minute_counts_nothing_again():
    core, states = UsageAggregator(allowed_lateness_s=60), InMemoryStates()
    old, new = usage_event("k", seconds=0), usage_event("k", seconds=600)
    core.process([old, new], states, [(0, 1), (0, 2)])
    again = core.process([old], states, [(0, 1)])
    assert again.duplicates == 1 and not again.late and not again.minutes
