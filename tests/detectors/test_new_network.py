"""First use from a new network (/24, /48); moves inside a key's own network stay quiet."""

from datetime import timedelta

from keytrail.schemas.signals import Severity, SignalKind
from keytrail.stream_processors.detectors import NewNetworkDetector
from tests.detectors.scenarios import START, event, run, steady

AFTER = START + timedelta(days=21, hours=9, minutes=14)


def test_first_use_from_a_new_public_network_names_it_and_the_known_ones():
    history = steady("key_n", days=21, ips=("198.51.100.10", "198.51.101.20"))
    signals, _ = run([NewNetworkDetector()], history + [event("key_n", AFTER, ip="203.0.113.7")])
    (signal,) = signals
    assert signal.kind is SignalKind.NEW_NETWORK and signal.severity is Severity.MEDIUM
    assert signal.evidence["networks"] == ["203.0.113.0/24"] and signal.evidence["ips"] == ["203.0.113.7"]
    assert set(signal.evidence["known_networks"]) == {"198.51.100.0/24", "198.51.101.0/24"}
    assert signal.message.startswith("Key key_n was used from 203.0.113.0/24 for the first time (2026-03-23 09:14 UTC")
    assert "in 21 days it had only been used from 198.51.100.0/24 and 198.51.101.0/24" in signal.message


def test_first_public_use_of_a_key_only_ever_used_internally_is_high():
    history = steady("key_n", days=10, ips=("10.20.30.11",))
    signals, _ = run([NewNetworkDetector()], history + [event("key_n", AFTER, ip="203.0.113.7")])
    assert [s.severity for s in signals] == [Severity.HIGH]
    assert "first use from a public address" in signals[0].message


def test_quiet_during_learning():
    events = steady("key_n", days=6, ips=("10.20.30.11",)) + [
        event("key_n", START + timedelta(days=6, hours=1), ip="203.0.113.7"),
        event("key_n", START + timedelta(days=6, hours=2), ip="2001:db8:1::7"),
    ]
    assert run([NewNetworkDetector()], events)[0] == []


def test_moves_inside_the_own_network_are_quiet():
    history = steady("key_n", days=14, ips=("10.20.30.11", "198.51.100.10"))
    moved = [
        event("key_n", AFTER, ip="10.20.30.200"),  # new address, known /24
        event("key_n", AFTER + timedelta(hours=1), ip="10.20.31.5"),  # new /24 in the same private /16
        event("key_n", AFTER + timedelta(hours=2), ip="198.51.100.99"),  # new address, known public /24
    ]
    assert run([NewNetworkDetector()], history + moved)[0] == []


def test_new_slash24_in_a_known_public_slash16_is_low():
    history = steady("key_n", days=14, ips=("198.51.100.10",))
    signals, _ = run([NewNetworkDetector()], history + [event("key_n", AFTER, ip="198.51.7.1")])
    assert [s.severity for s in signals] == [Severity.LOW]
    assert "198.51.0.0/16" in signals[0].message


def test_ipv6_networks_are_slash48():
    history = steady("key_n", days=14, ips=("2001:db8:1:2::10",))
    same = event("key_n", AFTER, ip="2001:db8:1:ffff::1")
    other = event("key_n", AFTER + timedelta(hours=2), ip="2001:db9:77::1")
    signals, _ = run([NewNetworkDetector()], history + [same, other])
    assert [s.evidence["networks"] for s in signals] == [["2001:db9:77::/48"]]


def test_a_key_used_from_everywhere_gives_one_signal_then_is_nomadic_and_remembers_less():
    history = steady("key_n", days=14, ips=("198.51.100.10",))
    flood = [event("key_n", AFTER + timedelta(seconds=20 * i), ip=f"203.{i // 200}.{i % 200}.1") for i in range(500)]
    signals, states = run([NewNetworkDetector()], history + flood)
    assert len(signals) == 1  # one in the first hour; from the sixth new network on, the key is nomadic
    assert len(states["key_n"].detector_state["new_network"]["n"]) == 16


def test_a_nomadic_key_is_quiet_until_it_has_settled_for_four_weeks():
    roaming = [event("key_n", START + timedelta(days=day, hours=12), ip=f"198.51.{day}.1") for day in range(2, 9)]
    history = steady("key_n", days=50, every_s=3600, ips=("198.51.100.10",))
    new_at_day_12 = event("key_n", START + timedelta(days=12, hours=9), ip="203.0.113.7")
    new_at_day_40 = event("key_n", START + timedelta(days=40, hours=9), ip="192.0.2.7")
    signals, _ = run([NewNetworkDetector()], history + roaming + [new_at_day_12, new_at_day_40])
    assert [s.evidence["networks"] for s in signals] == [["192.0.2.0/24"]]
