"""Use of a revoked, expired or disabled key: always reported, once per key and hour."""

from datetime import timedelta

from keytrail.schemas.signals import Severity, SignalKind
from keytrail.schemas.usage import Outcome
from keytrail.stream_processors.detectors import InactiveKeyDetector
from tests.detectors.scenarios import START, event, run, steady


def test_first_use_of_a_revoked_key_is_critical_even_for_a_brand_new_key():
    signals, _ = run([InactiveKeyDetector()], [event("key_rev", START, ip="203.0.113.7", outcome=Outcome.REVOKED,
                                                     status=401, route="/v1/admin/users")])
    (signal,) = signals
    assert signal.kind is SignalKind.USE_OF_INACTIVE_KEY and signal.severity is Severity.CRITICAL
    assert signal.evidence["ips"] == ["203.0.113.7"] and signal.evidence["routes"] == ["GET /v1/admin/users"]
    assert signal.evidence["outcomes"] == ["revoked"]
    assert "key_rev" in signal.message and "203.0.113.7" in signal.message and "revoked" in signal.message
    assert signal.detected_at == START


def test_expired_and_disabled_keys_are_high():
    signals, _ = run([InactiveKeyDetector()], [
        event("key_exp", START, outcome=Outcome.EXPIRED),
        event("key_dis", START, outcome=Outcome.DISABLED),
    ])
    assert {(s.key_id, s.severity) for s in signals} == {("key_exp", Severity.HIGH), ("key_dis", Severity.HIGH)}


def test_many_attempts_in_one_hour_give_one_signal_and_the_next_hour_another():
    attempts = [event("key_rev", START + timedelta(minutes=m), outcome=Outcome.REVOKED) for m in range(0, 120, 2)]
    signals, _ = run([InactiveKeyDetector()], attempts, batch_size=7)
    assert [s.window_start for s in signals] == [START, START + timedelta(hours=1)]
    assert len({s.signal_id for s in signals}) == 2


def test_ok_traffic_and_other_refusals_never_fire_and_leave_no_memory():
    events = steady("key_ok", days=1) + [event("key_ok", START + timedelta(hours=2), outcome=Outcome.DENIED)]
    signals, states = run([InactiveKeyDetector()], events)
    assert signals == []
    assert "use_of_inactive_key" not in states["key_ok"].detector_state


def _final_signals(events, batch_size: int = 1) -> dict:
    """Signals by id as the signals table keeps them (the last raised wins), events in arrival order."""
    from keytrail.stream_processors.core.aggregate import UsageAggregator
    from keytrail.stream_processors.state_stores import InMemoryStates

    core = UsageAggregator(allowed_lateness_s=300, detectors=[InactiveKeyDetector()])
    states = InMemoryStates()
    final = {}
    for begin in range(0, len(events), batch_size):
        for signal in core.process(events[begin : begin + batch_size], states).signals:
            final[signal.signal_id] = signal
    return final


def test_the_signal_describes_the_earliest_use_of_the_window_whatever_arrives_first():
    """A replay reads the log in event-time order; the stream got an earlier use late (within the
    allowed lateness). Both must end with the same row: the window's earliest use."""
    early = event("key_x", START + timedelta(minutes=10), ip="203.0.113.1", outcome=Outcome.REVOKED, status=401)
    later_use = event("key_x", START + timedelta(minutes=12), ip="198.51.100.2", outcome=Outcome.DISABLED)
    in_time_order = _final_signals([early, later_use])
    as_arrived = _final_signals([later_use, early])
    assert in_time_order == as_arrived
    (signal,) = as_arrived.values()
    assert signal.severity is Severity.CRITICAL and signal.evidence["ips"] == ["203.0.113.1"]
    assert signal.detected_at == early.occurred_at


def test_a_late_use_just_before_the_hour_still_gets_that_hour_its_signal():
    before = event("key_y", START + timedelta(minutes=58), outcome=Outcome.EXPIRED)
    after = event("key_y", START + timedelta(minutes=61), outcome=Outcome.REVOKED, status=401)
    as_arrived = _final_signals([after, before])
    assert as_arrived == _final_signals([before, after])
    assert sorted(s.window_start for s in as_arrived.values()) == [START, START + timedelta(hours=1)]


def test_uses_at_the_same_millisecond_give_the_same_signal_in_any_order():
    a = event("key_z", START + timedelta(minutes=3), ip="203.0.113.4", outcome=Outcome.EXPIRED)
    b = event("key_z", START + timedelta(minutes=3), ip="198.51.100.8", outcome=Outcome.REVOKED, status=401)
    assert _final_signals([a, b]) == _final_signals([b, a])
