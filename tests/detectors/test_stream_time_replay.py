"""Stream time and idle / never-used / expiring in event time: replays give identical signals (issue 18).

The watermark closes quiet keys' minutes and evaluates the key store's keys; however the stream is
cut into batches, re-delivered after a crash or replayed, the signals (ids and contents) are the same.
"""

from __future__ import annotations

import random
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from keytrail.schemas.signals import SignalKind
from keytrail.stream_processors.core import UsageAggregator
from keytrail.stream_processors.core.clock import epoch_ms
from keytrail.stream_processors.core.stream_time import StreamTimes
from keytrail.stream_processors.detectors.event_time import DAY_MS
from keytrail.stream_processors.detectors.key_lifecycle import (
    IdleGapDetector,
    KeyFacts,
    LifecycleThresholds,
    LifecycleWatch,
    lifecycle_signals,
)
from keytrail.stream_processors.state_stores import InMemoryStates
from tests.detectors.test_replay import EVENTS, quick_detectors
from tests.detectors.traffic import SIM_START, KeyTraffic, events_for_day

THRESHOLDS = LifecycleThresholds(idle_days=2, never_used_days=3, expiring_within_days=2)
CREATED = epoch_ms(SIM_START) - DAY_MS


def _history():
    """Ten days of five keys: one steady, one that stops on day 3, one on day 8 (too late to be idle
    by the end), one that expires on day 6, one silent on days 3-5 that comes back; plus a key of the
    key store that never sends anything."""
    plan = {"steady": range(10), "stops": range(3), "stops_late": range(9), "expiring": range(10),
            "returns": (0, 1, 2, 6, 7, 8, 9)}
    events = []
    for key_id, days in plan.items():
        traffic = KeyTraffic(key_id, daily_requests=200, rhythm="diurnal")
        rng = random.Random(key_id)
        for day in days:
            events.extend(events_for_day(traffic, day, rng))
    events.sort(key=lambda event: event.occurred_at)
    keys = [KeyFacts(key_id, "proj_sim", True, CREATED) for key_id in (*plan, "never")]
    keys[3] = KeyFacts("expiring", "proj_sim", True, CREATED, expires_ms=epoch_ms(SIM_START) + 6 * DAY_MS)
    return events, keys


HISTORY, KEYS = _history()


def run(deliveries, batch_size, detectors=()):
    """The embedded ingest's loop: core with stream time, then the lifecycle watch on its watermark."""
    core = UsageAggregator(allowed_lateness_s=300, detectors=[*detectors, IdleGapDetector(THRESHOLDS)])
    states, stream = InMemoryStates(), StreamTimes(300)
    watch = LifecycleWatch(THRESHOLDS)
    watch.load(KEYS)

    def last_used(key_id):
        state = states.get(key_id)
        return (state.last_used_ms, state.last_used_ip) if state is not None and state.last_used_ms else None

    found = []
    for begin in range(0, len(deliveries), batch_size):
        result = core.process(deliveries[begin : begin + batch_size], states, stream=stream)
        for record in result.last_used:
            watch.used(record.key_id, epoch_ms(record.last_used_at))
        found.extend(watch.admit(result.signals))
        found.extend(watch.advance(stream.event_watermark_ms(), last_used))
    return sorted((s.model_dump() for s in found), key=str), states


REFERENCE, _ = run(HISTORY, 2000)


def test_the_history_flags_the_keys_at_their_event_time():
    by_key = {(s["key_id"], s["kind"]): s for s in REFERENCE}
    stops_last = max(e.occurred_at for e in HISTORY if e.key_id == "stops")
    assert set(by_key) == {("stops", SignalKind.IDLE), ("never", SignalKind.NEVER_USED),
                           ("expiring", SignalKind.EXPIRING_SOON), ("returns", SignalKind.IDLE)}
    returns_before = max(e.occurred_at for e in HISTORY if e.key_id == "returns" and e.occurred_at < SIM_START + timedelta(days=3))
    assert by_key[("returns", SignalKind.IDLE)]["window_start"] == returns_before
    assert by_key[("stops", SignalKind.IDLE)]["detected_at"] == stops_last + timedelta(days=2)
    assert by_key[("never", SignalKind.NEVER_USED)]["detected_at"] == SIM_START + timedelta(days=2)
    assert by_key[("expiring", SignalKind.EXPIRING_SOON)]["detected_at"] == SIM_START + timedelta(days=4)


@settings(max_examples=10, deadline=None)
@given(
    batch_size=st.integers(min_value=50, max_value=3000),
    crash_at=st.integers(min_value=0, max_value=len(HISTORY)),
    rewind=st.integers(min_value=0, max_value=800),
)
def test_batching_and_redelivery_never_change_the_lifecycle_signals(batch_size, crash_at, rewind):
    deliveries = HISTORY[:crash_at] + HISTORY[max(0, crash_at - rewind) :]
    found, _ = run(deliveries, batch_size)
    assert found == REFERENCE


def test_a_silence_that_ended_inside_one_batch_is_flagged_like_one_seen_by_the_watermark():
    """The whole history in one batch: the watermark never saw the silence of `returns` going on,
    its own events show it; the signal is the one small batches give."""
    whole, _ = run(HISTORY, len(HISTORY))
    assert whole == REFERENCE


def test_the_wall_clock_driver_gives_the_same_signal_as_the_watermark():
    """One evaluation, two drivers: the scanner at any moment the condition holds gives the watermark's signal."""
    _, states = run(HISTORY, 2000)
    stops = states["stops"]
    facts = KeyFacts("stops", "proj_sim", True, CREATED, last_used_ms=stops.last_used_ms, last_used_ip=stops.last_used_ip)
    for later in (1, 3_600_000, 40 * DAY_MS):
        (scanned,) = lifecycle_signals(facts, stops.last_used_ms + 2 * DAY_MS + later, THRESHOLDS)
        assert scanned.model_dump() in REFERENCE


def test_every_detector_with_stream_time_gives_the_same_signals_however_the_stream_is_cut():
    """The incident scenario of test_replay, with the watermark closing quiet keys' minutes."""
    reference, _ = run(EVENTS, len(EVENTS), quick_detectors())
    for batch_size in (1, 7, 97, 500):
        found, _ = run(EVENTS, batch_size, quick_detectors())
        assert found == reference
    deliveries = EVENTS[:900] + EVENTS[600:]
    assert run(deliveries, 113, quick_detectors())[0] == reference


def test_the_watch_evaluates_only_keys_whose_deadline_passed():
    looked_up = []
    watch = LifecycleWatch(THRESHOLDS)
    watch.load([KeyFacts(f"k{i}", "p", True, CREATED + i * 60_000) for i in range(1000)])
    watch.advance(CREATED + 3 * DAY_MS + 10 * 60_000, lambda key_id: looked_up.append(key_id))
    assert len(looked_up) == 10  # the ten keys created in the first ten minutes are due; 990 are not visited
