"""A rate spike against the key's own time-of-week baseline."""

from datetime import timedelta

from keytrail.schemas.signals import Severity, SignalKind
from keytrail.stream_processors.detectors import RateSpikeDetector
from tests.detectors.scenarios import START, burst, later, run, steady

SPIKE_AT = START + timedelta(days=8, hours=14, minutes=30)


def test_a_minute_far_above_the_usual_peak_fires_with_observed_and_expected():
    history = steady("key_s", days=8, every_s=20)  # 3 requests per minute, around the clock
    spike = burst("key_s", SPIKE_AT, 400, ips=("203.0.113.7", "203.0.113.8"))
    signals, _ = run([RateSpikeDetector()], history + spike + [later(spike)])
    (signal,) = signals
    assert signal.kind is SignalKind.RATE_SPIKE and signal.severity is Severity.HIGH
    assert signal.observed == 400 and 3 <= signal.expected <= 5
    assert signal.evidence["minutes"] == ["2026-03-10 14:30 UTC"]
    assert signal.evidence["ips"] == ["203.0.113.7", "203.0.113.8"]
    assert signal.evidence["networks"] == ["203.0.113.0/24 (2 IPs)"]
    assert "Key key_s made 400 requests in the minute starting 2026-03-10 14:30 UTC from 2 IP addresses" in signal.message
    assert signal.detected_at == SPIKE_AT + timedelta(minutes=1)


def test_a_long_spike_gives_one_signal_per_hour_window():
    history = steady("key_s", days=8, every_s=20)
    spike = [e for m in range(90) for e in burst("key_s", SPIKE_AT + timedelta(minutes=m), 200)]
    signals, _ = run([RateSpikeDetector()], history + spike + [later(spike)])
    assert [s.window_start.hour for s in signals] == [14, 15]


def test_quiet_during_learning():
    history = steady("key_s", days=5, every_s=20)
    spike = burst("key_s", START + timedelta(days=5, hours=1), 400)
    assert run([RateSpikeDetector()], history + spike + [later(spike)])[0] == []


def test_busy_hours_of_the_day_and_small_absolute_bursts_are_not_spikes():
    history = steady("key_s", days=8, every_s=20, hours=range(24))
    busy = [e for m in range(10) for e in burst("key_s", SPIKE_AT + timedelta(minutes=m), 8)]  # 8/min: 2.7×
    small = burst("key_s", SPIKE_AT + timedelta(hours=2), 25)  # 8× but under 30 requests
    assert run([RateSpikeDetector()], history + busy + small + [later(small)])[0] == []
