"""Rate spikes by significance against the key's own hour-of-week baseline.

The old per-minute threshold (a minute >= 3x the usual busiest minute and >= 30 requests, after a
week of learning, one signal per hour window) is replaced on purpose: windows of 5-60 minutes are
judged by their tail probability, from the second day on, one signal per episode (re-sent with
the same id when the episode ends, covering all of it).
"""

import copy
import dataclasses
import math
import random
from datetime import timedelta

import orjson

from keytrail.schemas.signals import Severity, SignalKind
from keytrail.stream_processors.detectors import RateSpikeDetector
from keytrail.stream_processors.detectors.feedback import DetectorFeedback, TeachableDetector
from keytrail.stream_processors.detectors.rate_spike import anomaly_scores, score_minute
from keytrail.stream_processors.detectors.significance import rate_surprise, surprise
from tests.detectors.incidents import Incident, incident_events, key_events, quiet_key, run_events
from tests.detectors.scenarios import START, burst, later, run, steady

SPIKE_AT = START + timedelta(days=8, hours=14, minutes=30)


def episodes(signals):
    """Signals by id, in the order first raised (an episode's closing update shares its id)."""
    by_id = {}
    for signal in signals:
        by_id.setdefault(signal.signal_id, []).append(signal)
    return list(by_id.values())


def test_the_tail_bound_matches_the_exact_poisson_tail_within_a_factor_of_two():
    for mean, observed in ((0.3, 5), (2.0, 12), (50.0, 100), (0.05, 3)):
        exact = 1 - sum(math.exp(-mean) * mean**k / math.factorial(k) for k in range(observed))
        assert abs(surprise(observed, mean, 0.0) + math.log10(exact)) < math.log10(2)
    assert surprise(3, 5.0, 0.1) == 0.0
    assert surprise(100, 50.0, 0.5) < surprise(100, 50.0, 0.01)  # a wider baseline is less surprised


def test_a_quiet_key_at_16x_is_as_surprising_as_a_steady_busy_key_doubling():
    quiet = rate_surprise(80, 5.0, 1.0, 0.25)  # 0.3 -> 5 a minute over a quarter of an hour
    busy_doubling = rate_surprise(20_000, 10_000, 1.0, 0.08)  # a key whose hours vary by 8 %
    assert quiet > 6 and busy_doubling > 6
    assert rate_surprise(20_000, 10_000, 1.0, 0.25) < 4  # a key whose hours vary by 25 % doubles now and then
    assert rate_surprise(30, 10.0, 2.0, 0.25) < rate_surprise(30, 10.0, 1.0, 0.25)  # bursts widen counting noise


def test_a_minute_far_above_the_baseline_fires_once_and_explains_itself():
    history = steady("key_s", days=9, every_s=20)  # 3 requests per minute, around the clock
    spike = burst("key_s", SPIKE_AT, 400, ips=("203.0.113.7", "203.0.113.8"))
    signals, _ = run([RateSpikeDetector()], history + spike)
    (episode,) = episodes(signals)
    signal = episode[0]
    assert signal.kind is SignalKind.RATE_SPIKE and signal.severity is Severity.HIGH
    assert 400 <= signal.observed <= 420 and 15 <= signal.expected <= 21  # the 6-minute window ending with it
    assert signal.window_end == SPIKE_AT + timedelta(minutes=1)
    assert signal.score == 1.0 and signal.evidence["anomaly_score"] == ["1.000"]
    assert {"203.0.113.7", "203.0.113.8"} <= set(signal.evidence["ips"])
    assert "203.0.113.0/24 (2 IPs)" in signal.evidence["networks"]
    assert "made 418 requests in the 6 minutes to 2026-03-10 14:31 UTC where its own baseline for Tuesdays " \
           "around 14:00 UTC expects about 18" in signal.message
    assert signal.detected_at == SPIKE_AT + timedelta(minutes=1)
    if len(episode) > 1:  # the closing update: same id, the whole episode
        assert episode[-1].signal_id == signal.signal_id and episode[-1].window_start == signal.window_start


def test_a_sustained_spike_fires_once_and_is_updated_when_it_ends():
    history = steady("key_s", days=9, every_s=20)
    spike = [e for m in range(90) for e in burst("key_s", SPIKE_AT + timedelta(minutes=m), 200)]
    after = steady("key_s", days=0.2, start=SPIKE_AT + timedelta(minutes=90), every_s=20)
    signals, _ = run([RateSpikeDetector()], history + spike + after + [later(after)])
    (episode,) = episodes(signals)
    first, update = episode[0], episode[-1]
    assert len(episode) == 2 and first.detected_at <= SPIKE_AT + timedelta(minutes=2)
    assert update.signal_id == first.signal_id
    assert update.window_end - update.window_start >= timedelta(minutes=85)
    assert update.observed >= 90 * 200 and "has ended" in update.message


def test_quiet_on_the_first_day():
    history = steady("key_s", days=0.9, every_s=20)
    spike = burst("key_s", START + timedelta(hours=22), 400)
    assert run([RateSpikeDetector()], history + spike + [later(spike)])[0] == []


def test_judging_starts_after_about_a_day_with_wide_uncertainty():
    history = steady("key_s", days=1.5, every_s=60)
    big = [e for m in range(30) for e in burst("key_s", START + timedelta(days=1, hours=13, minutes=m), 20)]
    signals, _ = run([RateSpikeDetector()], history + big + [later(big)])
    assert [s.kind for s in episodes(signals)[0]][:1] == [SignalKind.RATE_SPIKE] and len(episodes(signals)) == 1
    # the same 3x that a settled key would flag is not enough on day two: the baseline is young
    modest = [e for m in range(30) for e in burst("key_s", START + timedelta(days=1, hours=13, minutes=m), 3)]
    assert run([RateSpikeDetector()], history + modest + [later(modest)])[0] == []


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
    (episode,) = episodes(signals)
    assert incident.start < episode[0].detected_at <= incident.start + timedelta(minutes=10)
    assert episode[0].observed >= 5 * episode[0].expected


def test_a_level_shift_upward_is_flagged_once_then_learnt():
    before = steady("key_l", days=4, every_s=60)  # 1 a minute
    after = steady("key_l", days=5, start=START + timedelta(days=4), every_s=6)  # 10 a minute from then on
    signals, states = run([RateSpikeDetector()], before + after + [later(after)])
    (episode,) = episodes(signals)
    assert episode[0].detected_at < START + timedelta(days=4, hours=1)
    assert all(s.detected_at < START + timedelta(days=6) for s in signals)  # the new level is known
    scores = anomaly_scores(states["key_l"])
    assert set(scores) == {5, 15, 30, 60} and max(scores.values()) < 0.3


def test_a_weekly_job_fires_the_first_week_only():
    history = steady("key_w", days=22, every_s=60)
    job = [e for week in range(3) for m in range(20)
           for e in burst("key_w", START + timedelta(days=1 + 7 * week, hours=3, minutes=10 + m), 40)]
    signals, _ = run([RateSpikeDetector()], history + job)
    assert [e[0].detected_at.date() for e in episodes(signals)] == [(START + timedelta(days=1)).date()]


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


def feedback_of(signal):
    return DetectorFeedback(
        key_id=signal.key_id, project_id=signal.project_id, kind=signal.kind.value, signal_id=signal.signal_id,
        window_start_ms=int(signal.window_start.timestamp() * 1000),
        window_end_ms=int(signal.window_end.timestamp() * 1000), evidence=signal.evidence, actor="alice")


def test_teaching_makes_the_observed_rate_known_idempotently_and_touches_only_its_own_memory():
    detector = RateSpikeDetector()
    assert isinstance(detector, TeachableDetector) and detector.kinds == ("rate_spike",)
    history = steady("key_t", days=8, every_s=20)  # 3 a minute
    spike = steady("key_t", days=0.05, start=SPIKE_AT, every_s=4)  # 15 a minute for 72 minutes
    signals, states = run([detector], history + spike)
    state = states["key_t"]
    first = episodes(signals)[0][0]
    others = {name: copy.deepcopy(memory) for name, memory in state.detector_state.items() if name != "rate_spike"}
    rest = (state.watermark_ms, state.total_requests, dict(state.open_minutes))
    assert detector.teach(state, feedback_of(first)) is True
    taught = copy.deepcopy(state.detector_state["rate_spike"])
    assert detector.teach(state, feedback_of(first)) is False  # taught twice = taught once
    assert state.detector_state["rate_spike"] == taught
    assert {n: m for n, m in state.detector_state.items() if n != "rate_spike"} == others
    assert (state.watermark_ms, state.total_requests, dict(state.open_minutes)) == rest
    at_s = int((SPIKE_AT + timedelta(days=1)).timestamp())
    assert score_minute(state, at_s, 15) < 0.3  # 15 a minute is the key's known level now
    assert detector.teach(state, dataclasses.replace(feedback_of(first), kind="new_network")) is False


def test_memory_stays_small():
    history = steady("key_s", days=15, every_s=7)
    _, states = run([RateSpikeDetector()], history + [later(history)])
    assert len(orjson.dumps(states["key_s"].detector_state["rate_spike"])) <= 600
