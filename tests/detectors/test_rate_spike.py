"""Rate spikes by significance against the key's own hour-of-week baseline."""

import copy
import random
from datetime import timedelta

import orjson

from keytrail.schemas.signals import Severity, SignalKind
from keytrail.stream_processors.detectors import RateSpikeDetector
from keytrail.stream_processors.detectors.rate_spike import score_minute
from keytrail.stream_processors.detectors.significance import surprise
from tests.detectors.incidents import Incident, incident_events, key_events, quiet_key, run_events
from tests.detectors.scenarios import START, burst, later, run, steady

SPIKE_AT = START + timedelta(days=8, hours=14, minutes=30)


def test_the_tail_bound_matches_the_exact_poisson_tail_within_a_factor_of_two():
    import math

    for mean, observed in ((0.3, 5), (2.0, 12), (50.0, 100), (0.05, 3)):
        exact = 1 - sum(math.exp(-mean) * mean**k / math.factorial(k) for k in range(observed))
        assert abs(surprise(observed, mean, 0.0) + math.log10(exact)) < math.log10(2)
    assert surprise(3, 5.0, 0.1) == 0.0
    assert surprise(100, 50.0, 0.5) < surprise(100, 50.0, 0.01)  # a wider baseline is less surprised


def test_a_minute_far_above_the_baseline_fires_once_and_explains_itself():
    history = steady("key_s", days=9, every_s=20)  # 3 requests per minute, around the clock
    spike = burst("key_s", SPIKE_AT, 400, ips=("203.0.113.7", "203.0.113.8"))
    signals, _ = run([RateSpikeDetector()], history + spike)
    (signal,) = signals
    assert signal.kind is SignalKind.RATE_SPIKE and signal.severity is Severity.HIGH
    assert signal.observed == 403 and 2.5 <= signal.expected <= 3.5  # the first minute of a 5-minute window
    assert signal.window_start == SPIKE_AT and signal.window_end == SPIKE_AT + timedelta(minutes=1)
    assert signal.score == 1.0 and signal.evidence["anomaly_score"] == ["1.000"]
    assert {"203.0.113.7", "203.0.113.8"} <= set(signal.evidence["ips"])
    assert "203.0.113.0/24 (2 IPs)" in signal.evidence["networks"]
    assert signal.message.startswith("Key key_s made ")
    assert "made 403 requests in the 1 minute to 2026-03-10 14:31 UTC where its own baseline for Tuesdays around 14:00 UTC expects about 3" in signal.message
    assert signal.detected_at == SPIKE_AT + timedelta(minutes=1)


def test_a_sustained_spike_fires_once_not_every_minute():
    history = steady("key_s", days=9, every_s=20)
    spike = [e for m in range(90) for e in burst("key_s", SPIKE_AT + timedelta(minutes=m), 200)]
    signals, _ = run([RateSpikeDetector()], history + spike + [later(spike)])
    assert len(signals) == 1 and signals[0].detected_at <= SPIKE_AT + timedelta(minutes=2)


def test_quiet_on_the_first_day():
    history = steady("key_s", days=0.9, every_s=20)
    spike = burst("key_s", START + timedelta(hours=22), 400)
    assert run([RateSpikeDetector()], history + spike + [later(spike)])[0] == []


def test_a_big_spike_on_day_two_is_already_judged():
    history = steady("key_s", days=1.5, every_s=60)
    spike = [e for m in range(30) for e in burst("key_s", START + timedelta(days=1, hours=13, minutes=m), 20)]
    signals, _ = run([RateSpikeDetector()], history + spike + [later(spike)])
    assert [s.kind for s in signals] == [SignalKind.RATE_SPIKE]


def test_one_burst_of_requests_within_a_minute_is_not_a_spike():
    key = quiet_key("key_b", 0.5, clustering=0.3)  # 30 % of requests follow another within seconds
    small = burst("key_b", SPIKE_AT, 10)  # a page load with retries: one minute
    signals, _ = run_events([RateSpikeDetector()], key_events(key, 9, seed=4) + small)
    assert [s for s in signals if s.detected_at >= SPIKE_AT] == []


def test_a_quiet_key_going_from_0_3_to_5_requests_a_minute_fires():
    key = quiet_key("key_q", 0.3)
    incident = Incident("key_q", START + timedelta(days=6, hours=11), 30, 4.7)
    events = key_events(key, 7, seed=3) + incident_events(incident, random.Random(3))
    signals, _ = run_events([RateSpikeDetector()], events)
    (signal,) = signals
    assert incident.start < signal.detected_at <= incident.start + timedelta(minutes=10)
    assert signal.observed >= 5 * signal.expected


def test_a_level_shift_upward_fires_once_then_is_the_new_normal():
    before = steady("key_l", days=4, every_s=30)  # 2 a minute
    after = steady("key_l", days=5, start=START + timedelta(days=4), every_s=6)  # 10 a minute from then on
    signals, _ = run([RateSpikeDetector()], before + after + [later(after)])
    assert len(signals) == 1 and signals[0].detected_at < START + timedelta(days=4, hours=1)


def test_a_weekly_job_fires_the_first_week_only():
    history = steady("key_w", days=22, every_s=60)
    job = [e for week in range(3) for m in range(20)
           for e in burst("key_w", START + timedelta(days=1 + 7 * week, hours=3, minutes=10 + m), 40)]
    signals, _ = run([RateSpikeDetector()], history + job)
    assert [s.detected_at.date() for s in signals] == [(START + timedelta(days=1)).date()]


def test_score_minute_is_pure_and_follows_the_spike():
    history = steady("key_s", days=8, every_s=20)
    _, states = run([RateSpikeDetector()], history + [later(history)])
    state = states["key_s"]
    before = copy.deepcopy(state.detector_state)
    at_s = int((START + timedelta(days=8, minutes=15)).timestamp())
    normal, spiking = score_minute(state, at_s, 3), score_minute(state, at_s, 300)
    assert state.detector_state == before
    assert normal < 0.2 and spiking == 1.0
    assert score_minute(type(state)(), at_s, 300) == 0.0  # nothing learnt yet


def test_memory_stays_small():
    history = steady("key_s", days=15, every_s=7)
    _, states = run([RateSpikeDetector()], history + [later(history)])
    assert len(orjson.dumps(states["key_s"].detector_state["rate_spike"])) <= 560
