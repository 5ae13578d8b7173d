"""False alerts on normal traffic, per 1,000 key-days after the learning period (target: at most 1).

The population's habits are varied and normal (see `traffic.random_population`): volumes, rhythms,
weekly jobs, growth, moves inside the own network, some rate limiting. The figures are printed; the
30-day measurements assert issue 18's bound (at most 1 alert per 1,000 key-days after learning).
"""

import os
from collections import Counter
from datetime import timedelta

import pytest

from keytrail.stream_processors.core import KeyState, UsageAggregator
from keytrail.stream_processors.detectors import (
    DenialBurstDetector,
    ManyIpsDetector,
    RateSpikeDetector,
    default_detectors,
)
from tests.detectors.traffic import SIM_START, heavy_minutes, heavy_population, random_population, simulate

LEARNING_DAYS = 14


def false_alerts(keys, days, seed):
    """Signals raised after the learning weeks, and the key-days they were raised in."""
    result = simulate(UsageAggregator(detectors=default_detectors()), keys, days, seed=seed)
    cut = SIM_START + timedelta(days=LEARNING_DAYS)
    after = [signal for signal in result.signals if signal.detected_at >= cut]
    return after, len(keys) * (days - LEARNING_DAYS), result.events


def report(label, after, key_days, events):
    """Print the signals and return false alerts per 1,000 key-days.

    An alert is a distinct signal id: a detector that updates an episode re-sends its signal with
    the same id (the signals table and the alert rules keep one row, one alert per id), so that
    update is not a second alert.
    """
    alerts = len({signal.signal_id for signal in after})
    rate = 1000 * alerts / key_days
    print(f"\n{label}: {alerts} alerts ({len(after)} signals) in {key_days} key-days after learning "
          f"({events:,} events) = {rate:.2f} per 1000 key-days; {dict(Counter(s.kind.value for s in after))}")
    for signal in after:
        print("  ", signal.severity.value, signal.message)
    return rate


def test_a_small_population_raises_almost_nothing_after_learning():
    keys = random_population(12, seed=101, max_daily=800)
    after, key_days, events = false_alerts(keys, days=LEARNING_DAYS + 14, seed=101)
    report("12 keys x 14 days", after, key_days, events)
    assert len(after) <= 1


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_false_alerts_per_1000_key_days_over_30_days():
    """100 keys (about 2 million events); KEYTRAIL_FALSE_ALERT_KEYS=200 / _SEED=… for the full measurement."""
    count = int(os.environ.get("KEYTRAIL_FALSE_ALERT_KEYS", "100"))
    seed = int(os.environ.get("KEYTRAIL_FALSE_ALERT_SEED", "202"))
    after, key_days, events = false_alerts(random_population(count, seed=seed), days=LEARNING_DAYS + 30, seed=seed)
    assert report(f"{count} keys x 30 days (seed {seed})", after, key_days, events) <= 1.0


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_busy_keys_raise_almost_no_rate_ip_or_refusal_alerts():
    """Busy keys (5–2,000 requests a minute) at minute level, through the detectors that judge minutes."""
    import random

    detectors = [RateSpikeDetector(), ManyIpsDetector(), DenialBurstDetector()]
    keys, days = heavy_population(60, seed=303), LEARNING_DAYS + 30
    cut_s = int((SIM_START + timedelta(days=LEARNING_DAYS)).timestamp())
    after = []
    for key in keys:
        state, rng = KeyState(project_id="proj_sim"), random.Random(key.key_id)
        for hour in heavy_minutes(key, days, rng):
            for detector in detectors:
                for signal in detector.observe(key.key_id, state, [], hour):
                    if signal.window_start.timestamp() >= cut_s:
                        after.append(signal)
    assert report("60 busy keys x 30 days (minute level)", after, len(keys) * 30, 0) <= 1.0


def quiet_and_office_hours_population(count, seed):
    """Issue 18's habits: quiet keys (0.05-2 requests a minute) and office-hours keys (weekdays 8-18 UTC)."""
    import random

    from tests.detectors.traffic import KeyTraffic

    rng = random.Random(seed)
    keys = []
    for index in range(count):
        per_minute = 10 ** rng.uniform(-1.3, 0.3)
        if index % 2:
            keys.append(KeyTraffic(key_id=f"key_office{index:03d}", daily_requests=per_minute * 1440 * 2,
                                   rhythm="business", weekend_share=0.0))
        else:
            keys.append(KeyTraffic(key_id=f"key_quiet{index:03d}", daily_requests=per_minute * 1440,
                                   rhythm=rng.choice(("flat", "diurnal"))))
    return keys


def test_quiet_and_office_hours_keys_raise_almost_nothing_after_learning():
    keys = quiet_and_office_hours_population(12, seed=118)
    after, key_days, events = false_alerts(keys, days=LEARNING_DAYS + 14, seed=118)
    report("12 quiet / office-hours keys x 14 days", after, key_days, events)
    assert len(after) <= 1
