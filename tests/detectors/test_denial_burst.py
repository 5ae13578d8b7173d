"""A burst of denied, invalid or rate-limited outcomes."""

from datetime import timedelta

from keytrail.schemas.signals import Severity, SignalKind
from keytrail.schemas.usage import Outcome
from keytrail.stream_processors.detectors import DenialBurstDetector
from tests.detectors.scenarios import START, burst, later, run, steady

AT = START + timedelta(days=4, hours=16, minutes=45)


def test_a_minute_of_denials_fires_with_outcomes_ips_and_routes():
    history = steady("key_b", days=4, every_s=30)
    probe = burst("key_b", AT, 40, ips=("203.0.113.7",), route="/v1/admin/users", outcome=Outcome.DENIED)
    probe += burst("key_b", AT, 8, ips=("203.0.113.8",), route="/v1/admin/keys", outcome=Outcome.INVALID)
    signals, _ = run([DenialBurstDetector()], history + probe + [later(probe)])
    (signal,) = signals
    assert signal.kind is SignalKind.DENIAL_BURST and signal.severity is Severity.HIGH
    assert signal.observed == 48 and signal.evidence["outcomes"] == ["denied=40", "invalid=8"]
    assert signal.evidence["ips"] == ["203.0.113.7", "203.0.113.8"]
    assert signal.evidence["routes"] == ["GET /v1/admin/users", "GET /v1/admin/keys"]
    assert "Key key_b had 48 denied, invalid or rate-limited requests in the minute starting 2026-03-06 16:45 UTC" in signal.message
    assert "203.0.113.7" in signal.message and "GET /v1/admin/users" in signal.message


def test_quiet_during_learning():
    history = steady("key_b", days=2, every_s=30)
    probe = burst("key_b", START + timedelta(days=2), 40, outcome=Outcome.DENIED)
    assert run([DenialBurstDetector()], history + probe + [later(probe)])[0] == []


def test_revoked_outcomes_belong_to_the_inactive_key_detector_not_here():
    history = steady("key_b", days=4, every_s=30)
    revoked = burst("key_b", AT, 40, outcome=Outcome.REVOKED)
    assert run([DenialBurstDetector()], history + revoked + [later(revoked)])[0] == []


def test_a_key_that_is_rate_limited_every_day_is_not_bursting():
    history = steady("key_b", days=6, every_s=30)
    daily = []
    for day in range(6):
        daily += burst("key_b", START + timedelta(days=day, hours=9), 20, outcome=Outcome.RATE_LIMITED)
    today = burst("key_b", START + timedelta(days=6, hours=9), 25, outcome=Outcome.RATE_LIMITED)
    assert run([DenialBurstDetector()], history + daily + today + [later(today)])[0] == []
