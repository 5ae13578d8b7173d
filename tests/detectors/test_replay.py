"""Redelivery, batching and state serialisation never change the signals (replays reproduce them)."""

from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from keytrail.schemas.usage import Outcome
from keytrail.stream_processors.core import KeyState, UsageAggregator
from keytrail.stream_processors.detectors import (
    DenialBurstDetector,
    DenialBurstThresholds,
    DormantKeyDetector,
    DormantKeyThresholds,
    InactiveKeyDetector,
    ManyIpsDetector,
    ManyIpsThresholds,
    NewNetworkDetector,
    NewNetworkThresholds,
    NewRouteDetector,
    NewRouteThresholds,
    RateSpikeDetector,
    RateSpikeThresholds,
    UnusualHourDetector,
    UnusualHourThresholds,
)
from keytrail.stream_processors.state_stores import InMemoryStates
from tests.detectors.scenarios import START, burst, event, steady


def quick_detectors():
    """Every detector, with learning shortened to a day or two so an incident fits in a small scenario."""
    return [
        InactiveKeyDetector(),
        DormantKeyDetector(DormantKeyThresholds(dormant_days=3)),
        NewNetworkDetector(NewNetworkThresholds(learning_days=1)),
        NewRouteDetector(NewRouteThresholds(learning_days=1)),
        UnusualHourDetector(UnusualHourThresholds(min_active_days=2, calm_days=2, max_outside_chance=0.05)),
        RateSpikeDetector(RateSpikeThresholds(judge_after_hours=24)),
        ManyIpsDetector(ManyIpsThresholds(learning_days=1)),
        DenialBurstDetector(DenialBurstThresholds(learning_days=1)),
    ]


def incident_events():
    """Two days of office-hours use, then an incident that trips every detector, plus a dormant key."""
    office = steady("key_a", days=2, every_s=300, hours=range(8, 18))
    at = START + timedelta(days=2, hours=10)
    botnet = tuple(f"203.0.113.{i}" for i in range(1, 41))
    incident = (
        [event("key_a", START + timedelta(days=2, hours=3), ip="10.20.30.11")]
        + burst("key_a", at, 200, ips=botnet, route="/v1/admin/users", method="DELETE")
        + burst("key_a", at + timedelta(minutes=1), 30, ips=botnet[:3], outcome=Outcome.DENIED)
        + [event("key_a", at + timedelta(minutes=3), outcome=Outcome.REVOKED, ip="203.0.113.9")]
        + steady("key_a", days=0.1, start=at + timedelta(minutes=5), every_s=60)
    )
    dormant = [event("key_b", START), event("key_b", START + timedelta(days=4))]
    return sorted(office + incident + dormant, key=lambda e: e.occurred_at)


EVENTS = incident_events()


def signals_of(deliveries, batch_size, states=None):
    core = UsageAggregator(allowed_lateness_s=300, detectors=quick_detectors())
    states = states if states is not None else InMemoryStates()
    found = []
    for begin in range(0, len(deliveries), batch_size):
        found.extend(core.process(deliveries[begin : begin + batch_size], states).signals)
    return [signal.model_dump() for signal in found], states


REFERENCE, _ = signals_of(EVENTS, len(EVENTS))


def test_the_scenario_trips_every_detector():
    assert sorted({s["kind"].value for s in REFERENCE}) == [
        "denial_burst", "dormant_key_active", "many_ips", "new_network", "new_route", "rate_spike",
        "unusual_hour", "use_of_inactive_key",
    ]


def test_the_same_events_processed_twice_give_no_extra_signal():
    first, states = signals_of(EVENTS, 500)
    again, _ = signals_of(EVENTS, 500, states)
    assert again == [] and sorted(first, key=str) == sorted(REFERENCE, key=str)


@settings(max_examples=25, deadline=None)
@given(
    batch_size=st.integers(min_value=1, max_value=700),
    crash_at=st.integers(min_value=0, max_value=len(EVENTS)),
    rewind=st.integers(min_value=0, max_value=400),
)
def test_batching_and_redelivery_after_a_crash_never_change_the_signals(batch_size, crash_at, rewind):
    """Consumed up to `crash_at`, restarted from an offset `rewind` events earlier: a range is delivered twice."""
    deliveries = EVENTS[:crash_at] + EVENTS[max(0, crash_at - rewind) :]
    found, _ = signals_of(deliveries, batch_size)
    assert sorted(found, key=str) == sorted(REFERENCE, key=str)


def test_state_serialised_between_batches_gives_the_same_signals():
    """The Faust path: every key's state goes through bytes between batches."""
    core = UsageAggregator(allowed_lateness_s=300, detectors=quick_detectors())
    table: dict[str, bytes] = {}
    found = []
    for begin in range(0, len(EVENTS), 97):
        states = InMemoryStates({key: KeyState.from_bytes(raw) for key, raw in table.items()})
        found.extend(s.model_dump() for s in core.process(EVENTS[begin : begin + 97], states).signals)
        for key, state in states.items():
            table[key] = state.to_bytes()
            assert KeyState.from_bytes(table[key]) == state
    assert sorted(found, key=str) == sorted(REFERENCE, key=str)
