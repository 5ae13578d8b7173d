"""Issue 18 acceptance: quiet keys (0.05-2 requests a minute) running 5-20x their usual rate for
15-60 minutes are caught (>= 95 %), measured with the project's own traffic generator.

The spike is planted in a key's normal traffic on day 9 (after more than a week of history), at a
random minute of a busy hour of that key, at `factor` x the key's usual rate for that hour. A key
counts as caught when a rate_spike signal of that key has a window overlapping the spike.

The rate detector judges 5-60-minute windows by their tail probability against the key's own
hour-of-week baseline (and, for quiet keys, by how many minutes saw a request), so these spikes
stand out although none has 30 requests in a minute (the old per-minute threshold caught 12.5 %).
"""

import random
import uuid
from datetime import timedelta

from keytrail.schemas.signals import SignalKind
from keytrail.stream_processors.core import UsageAggregator
from keytrail.stream_processors.detectors import default_detectors
from keytrail.stream_processors.state_stores import InMemoryStates
from tests.detectors.traffic import SIM_START, KeyTraffic, hour_weights, make_event, merged_days, poisson

DAYS = 10
SPIKE_DAY = 8  # day 9: a Tuesday or later, after 8 days of history


def quiet_keys(count, seed):
    rng = random.Random(seed)
    keys = []
    for index in range(count):
        per_minute = 10 ** rng.uniform(-1.3, 0.3)  # 0.05 .. 2 requests a minute
        rhythm = rng.choice(("flat", "diurnal", "business"))
        keys.append(KeyTraffic(key_id=f"key_q{index:03d}", daily_requests=per_minute * 1440, rhythm=rhythm))
    return keys


def planted_spike(key, rng):
    """(start, minutes, events) of a spike at factor x the key's usual rate in one of its busy hours."""
    weights = hour_weights(key.rhythm)
    usual = key.daily_requests / 1440 * 24 / sum(weights)  # per minute at a weight-1 hour
    hour = rng.choice([h for h, w in enumerate(weights) if w >= 0.9 * max(weights)])
    factor, minutes = rng.uniform(5, 20), rng.randint(15, 60)
    start = SIM_START + timedelta(days=SPIKE_DAY, hours=hour, minutes=rng.randint(0, 59 - min(59, minutes // 2)))
    rate = usual * weights[hour] * factor
    events = []
    for minute in range(minutes):
        for _ in range(poisson(rng, rate)):
            at = start + timedelta(minutes=minute, milliseconds=rng.randrange(60_000))
            events.append(make_event(key.key_id, at, event_id=uuid.UUID(int=rng.getrandbits(128)),
                                     client_ip="198.51.100.23"))
    return start, minutes, events


def recall(count, seed):
    keys = quiet_keys(count, seed)
    rng = random.Random(seed + 1)
    spikes = {key.key_id: planted_spike(key, rng) for key in keys}
    core, states, signals = UsageAggregator(detectors=default_detectors()), InMemoryStates(), []
    for day, events in enumerate(merged_days(keys, DAYS, seed)):
        if day == SPIKE_DAY:
            events = sorted(events + [e for _, _, planted in spikes.values() for e in planted],
                            key=lambda event: event.occurred_at)
        for begin in range(0, len(events), 5000):
            signals.extend(core.process(events[begin:begin + 5000], states).signals)
    caught = set()
    for signal in signals:
        if signal.kind is SignalKind.RATE_SPIKE and signal.key_id in spikes:
            start, minutes, _ = spikes[signal.key_id]
            end = start + timedelta(minutes=minutes)
            if signal.window_start < end + timedelta(minutes=5) and signal.detected_at >= start:
                caught.add(signal.key_id)
    return len(caught) / len(keys)


def test_quiet_keys_spiking_5_to_20x_for_15_to_60_minutes_are_caught():
    measured = recall(40, seed=1818)
    print(f"\nquiet-key spike recall: {measured:.2%} of 40 keys")
    assert measured >= 0.95
