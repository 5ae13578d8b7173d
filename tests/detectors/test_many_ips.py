"""Many distinct IPs at once."""

from datetime import timedelta

from keytrail.schemas.signals import Severity, SignalKind
from keytrail.stream_processors.detectors import ManyIpsDetector
from tests.detectors.scenarios import START, burst, later, run, steady

AT = START + timedelta(days=9, hours=4, minutes=2)
BOTNET = tuple(f"203.0.{113 + i % 3}.{i}" for i in range(45))


def test_a_minute_from_45_addresses_fires_with_bounded_evidence():
    history = steady("key_i", days=9, every_s=30, ips=("10.20.30.11", "10.20.30.12"))
    flood = burst("key_i", AT, 90, ips=BOTNET)
    signals, _ = run([ManyIpsDetector()], history + flood + [later(flood)])
    (signal,) = signals
    assert signal.kind is SignalKind.MANY_IPS and signal.severity is Severity.HIGH
    assert signal.observed == 45 and signal.expected <= 3
    assert len(signal.evidence["ips"]) == 20 and set(signal.evidence["ips"]) <= set(BOTNET)
    assert signal.evidence["networks"] == ["203.0.113.0/24 (15 IPs)", "203.0.114.0/24 (15 IPs)", "203.0.115.0/24 (15 IPs)"]
    assert "Key key_i was used from 45 distinct IP addresses in the minute starting 2026-03-11 04:02 UTC" in signal.message
    assert "203.0.113.0/24 (15 IPs)" in signal.message


def test_quiet_during_learning():
    history = steady("key_i", days=3, every_s=30)
    flood = burst("key_i", START + timedelta(days=3), 90, ips=BOTNET)
    assert run([ManyIpsDetector()], history + flood + [later(flood)])[0] == []


def test_a_fleet_the_key_already_uses_is_not_many():
    fleet = tuple(f"10.20.30.{i}" for i in range(1, 21))
    history = steady("key_i", days=9, every_s=60)
    deploys = [e for m in range(10) for e in burst("key_i", START + timedelta(days=6, minutes=m), 40, ips=fleet)]
    busier = burst("key_i", AT, 100, ips=fleet + tuple(f"10.20.31.{i}" for i in range(20)))  # 40 IPs: 2× the fleet
    assert run([ManyIpsDetector()], history + deploys + busier + [later(busier)])[0] == []
