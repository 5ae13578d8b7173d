"""A dormant key suddenly active."""

from datetime import timedelta

from keytrail.schemas.signals import Severity, SignalKind
from keytrail.stream_processors.detectors import DormantKeyDetector
from tests.detectors.scenarios import START, event, run, steady


def test_use_after_45_silent_days_fires_with_the_silence_and_the_previous_use():
    history = steady("key_d", days=10, every_s=3600)
    revival = START + timedelta(days=10 + 45, hours=3, minutes=7)
    signals, _ = run([DormantKeyDetector()], history + [event("key_d", revival, ip="203.0.113.9")])
    (signal,) = signals
    assert signal.kind is SignalKind.DORMANT_KEY_ACTIVE and signal.severity is Severity.MEDIUM
    assert signal.evidence["ips"] == ["203.0.113.9"]
    assert signal.evidence["previous_use"] == ["2026-03-11 23:00 UTC"]
    assert "key_d" in signal.message and "203.0.113.9" in signal.message and "45 days without any use" in signal.message
    assert signal.observed >= 45 and signal.expected == 30


def test_silence_of_more_than_90_days_is_high():
    signals, _ = run([DormantKeyDetector()], [event("key_d", START), event("key_d", START + timedelta(days=120))])
    assert [s.severity for s in signals] == [Severity.HIGH]


def test_quiet_while_learning_first_use_and_short_silences():
    events = [event("key_d", START), event("key_d", START + timedelta(days=29, hours=23))]
    assert run([DormantKeyDetector()], events)[0] == []


def test_a_monthly_job_fires_on_its_first_revival_only():
    runs = [START + timedelta(days=31 * month) for month in range(5)]
    signals, _ = run([DormantKeyDetector()], [event("key_m", at) for at in runs])
    assert len(signals) == 1
