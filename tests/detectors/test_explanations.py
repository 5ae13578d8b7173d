"""Every signal explains itself (issue 18): one sentence with the observed and expected figures, the
window and the evidence, and a link to the key's timeline for that window — whichever default
detector raised it, because the sentence and the link are built centrally (signal_builder)."""

from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

from keytrail.schemas.signals import Severity, Signal, SignalKind
from keytrail.schemas.usage import Outcome
from keytrail.stream_processors.detectors import default_detectors
from keytrail.stream_processors.detectors.event_time import iso_text
from keytrail.stream_processors.detectors.signal_builder import (
    MAX_MESSAGE_CHARS,
    TIMELINE_PATH,
    build_signal,
    explanation_of,
)
from keytrail.stream_processors.detectors.wording import figure_text, window_text
from tests.detectors.scenarios import START, burst, event, run, steady

DEFAULT_KINDS = {
    "denial_burst", "dormant_key_active", "many_ips", "new_network", "new_route", "rate_spike", "unusual_hour",
    "use_of_inactive_key",
}


def incident_signals() -> list[Signal]:
    """Two weeks of office-hours use, then a night request and an incident that trips every default detector."""
    office = steady("key_a", days=15, every_s=300, hours=range(8, 18), weekdays=range(5))
    night = [event("key_a", START + timedelta(days=15, hours=3, minutes=12))]  # Tuesday 03:12
    at = START + timedelta(days=15, hours=10)
    botnet = tuple(f"203.0.113.{i}" for i in range(1, 41))
    incident = (
        burst("key_a", at, 300, ips=botnet, route="/v1/admin/users", method="DELETE")
        + burst("key_a", at + timedelta(minutes=1), 60, ips=botnet[:3], outcome=Outcome.DENIED)
        + [event("key_a", at + timedelta(minutes=3), outcome=Outcome.REVOKED, ip="203.0.113.9")]
        + steady("key_a", days=1, start=at + timedelta(minutes=5), every_s=120, hours=range(8, 18))
    )
    dormant = [event("key_b", START), event("key_b", START + timedelta(days=40, hours=9))]
    signals, _ = run(default_detectors(), office + night + incident + dormant)
    return signals


SIGNALS = incident_signals()


def test_the_scenario_trips_every_default_detector():
    assert {s.kind.value for s in SIGNALS} >= DEFAULT_KINDS, sorted({s.kind.value for s in SIGNALS})


def test_every_signal_explains_itself_in_one_sentence_with_figures_window_and_evidence():
    for signal in SIGNALS:
        sentence = explanation_of(signal.message)
        assert sentence, signal.message
        assert signal.message.endswith(sentence) and sentence.endswith(".")
        body = sentence.split("; timeline: ")[0]
        assert ". " not in body and body.count("Observed ") == 1, sentence  # one sentence
        assert f"Observed {figure_text(signal.observed)} " in sentence
        assert f" {figure_text(signal.expected)} " in sentence or f"of {figure_text(signal.expected)}" in sentence
        start_ms = int(signal.window_start.timestamp() * 1000)
        end_ms = int(signal.window_end.timestamp() * 1000)
        assert f" in {window_text(start_ms, end_ms)}, with " in sentence
        named = [item for name in ("ips", "networks", "routes", "hours", "outcomes") for item in signal.evidence.get(name, [])[:1]]
        assert named and all(item in sentence for item in named), (signal.kind, sentence)
        assert len(signal.message) <= MAX_MESSAGE_CHARS


def test_every_signal_links_the_timeline_of_its_key_and_window():
    for signal in SIGNALS:
        (link,) = signal.evidence["timeline"]
        parts = urlsplit(link)
        assert parts.path == TIMELINE_PATH
        start_ms = int(signal.window_start.timestamp() * 1000)
        end_ms = int(signal.window_end.timestamp() * 1000)
        assert parse_qs(parts.query) == {"key_id": [signal.key_id], "since": [iso_text(start_ms)], "until": [iso_text(end_ms)]}
        assert f"timeline: {link}." in signal.message


def test_a_long_account_is_shortened_but_the_explanation_is_kept():
    signal = build_signal(
        key_id="key_x", project_id="proj_a", kind=SignalKind.RATE_SPIKE, severity=Severity.HIGH, score=5.0,
        observed=1234.0, expected=12.5, window_start_ms=1_774_400_000_000, window_ms=3_600_000,
        detected_at_ms=1_774_400_060_000, evidence={"ips": ["203.0.113.7"], "routes": ["GET /" + "x" * 400]},
        message="Key key_x made a lot of requests " + "and more " * 200,
    )
    assert len(signal.message) <= MAX_MESSAGE_CHARS
    sentence = explanation_of(signal.message)
    assert sentence.startswith("Observed 1,234 requests vs about 12.5 expected in ")
    assert sentence.endswith(f"timeline: {signal.evidence['timeline'][0]}.")
