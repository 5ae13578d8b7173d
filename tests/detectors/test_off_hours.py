"""Issue 18, off-hours: office-hours keys are caught at night or at the weekend after at most 7 days of
history; keys used around the clock never are.

Traffic comes from the project's generator (`traffic.events_for_day`): office-hours keys are its
business rhythm cut to working hours (07:00–19:00 UTC, Monday to Friday, nothing else), from 0.05 to
2 requests a minute, starting on a Monday, Tuesday or Wednesday. Each gets one incident: a session
of a few requests at night, or in the day on a Sunday after a quiet Saturday, at most 7 days after the
key's first request. Recall is printed (and asserted); every incident is a labelled window, and any
other signal on those keys counts as a false alert.
"""

import math
import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest

from keytrail.schemas.signals import SignalKind
from keytrail.stream_processors.core import UsageAggregator
from keytrail.stream_processors.detectors import UnusualHourDetector
from keytrail.stream_processors.state_stores import InMemoryStates
from tests.detectors.traffic import SIM_START, KeyTraffic, events_for_day, make_event, simulate

WORKING_HOURS = range(7, 19)
DAYS = 12


@dataclass(frozen=True)
class Incident:
    key_id: str
    kind: str
    """`night` or `weekend`."""
    start: datetime
    end: datetime
    history_days: float
    """Days between the key's first request and the incident."""


def office_key(rng: random.Random, index: int, seed: int) -> tuple[KeyTraffic, int]:
    """An office-hours key (weekday working hours only) and the day it starts (0 = Monday)."""
    per_minute = 10 ** rng.uniform(math.log10(0.05), math.log10(2))
    traffic = KeyTraffic(
        key_id=f"key_office_{seed}_{index}",
        daily_requests=per_minute * 60 * 11.28,  # business weights sum to 11.28: the working hours get ~per_minute
        rhythm="business",
        weekend_share=0.0,
        hosts=(f"10.{seed}.{index}.11", f"10.{seed}.{index}.12"),
    )
    return traffic, rng.choice((0, 1, 2))


def office_events(traffic: KeyTraffic, start_day: int, seed: int):
    rng = random.Random(f"{seed}:{traffic.key_id}")
    events = []
    for day in range(DAYS):
        todays = events_for_day(traffic, day, rng)
        if day >= start_day:
            events.extend(e for e in todays if e.occurred_at.hour in WORKING_HOURS)
    return events


def incident_for(traffic: KeyTraffic, start_day: int, first_at: datetime, rng: random.Random) -> Incident:
    """A night after the key's fifth active day, or (for a Monday key) its first Sunday, within 7 days."""
    fifth_active_day = start_day + 4 if start_day == 0 else start_day + 6  # Tue/Wed keys: the weekend comes between
    if start_day == 0 and rng.random() < 0.5:
        kind, at = "weekend", SIM_START + timedelta(days=6, hours=rng.randint(9, 16), minutes=rng.randrange(60))
    else:
        night_hour = rng.choice((21, 22, 23, 0, 1, 2, 3, 4))
        day = fifth_active_day + (1 if night_hour < 12 else 0)
        kind, at = "night", SIM_START + timedelta(days=day, hours=night_hour, minutes=rng.randrange(60))
    end = at + timedelta(minutes=rng.randint(5, 45))
    return Incident(traffic.key_id, kind, at, end, (at - first_at).total_seconds() / 86400)


def incident_events(incident: Incident, traffic: KeyTraffic, rng: random.Random):
    span_ms = int((incident.end - incident.start).total_seconds() * 1000)
    moments = sorted(rng.randrange(span_ms) for _ in range(rng.randint(3, 40)))
    ip = rng.choice((traffic.hosts[0], "203.0.113.77"))  # its own host (a stolen laptop) or elsewhere
    return [make_event(traffic.key_id, incident.start + timedelta(milliseconds=ms), event_id=uuid.UUID(int=rng.getrandbits(128)),
                       client_ip=ip, route="/v1/orders") for ms in moments]


def run_office_keys(seed: int, count: int, detectors):
    rng = random.Random(seed)
    keys, incidents, events = [], [], []
    for index in range(count):
        traffic, start_day = office_key(rng, index, seed)
        normal = office_events(traffic, start_day, seed)
        incident = incident_for(traffic, start_day, normal[0].occurred_at, rng)
        keys.append(traffic)
        incidents.append(incident)
        events.extend(normal + incident_events(incident, traffic, rng))
    events.sort(key=lambda e: e.occurred_at)
    core, states, signals = UsageAggregator(detectors=detectors), InMemoryStates(), []
    for begin in range(0, len(events), 5000):
        signals.extend(core.process(events[begin : begin + 5000], states).signals)
    return incidents, signals, states


def caught(incident: Incident, signals) -> bool:
    return any(
        s.key_id == incident.key_id and s.kind is SignalKind.UNUSUAL_HOUR and incident.start <= s.detected_at <= incident.end
        for s in signals
    )


def test_office_hours_keys_are_caught_at_night_or_at_the_weekend_after_at_most_seven_days():
    found, total, false_alerts, by_kind = 0, 0, [], {"night": [0, 0], "weekend": [0, 0]}
    for seed in (1, 2, 3, 4):
        incidents, signals, _ = run_office_keys(seed, 10, [UnusualHourDetector()])
        assert all(i.history_days <= 7 for i in incidents)
        for incident in incidents:
            hit = caught(incident, signals)
            found += hit
            total += 1
            by_kind[incident.kind][0] += hit
            by_kind[incident.kind][1] += 1
        windows = {(i.key_id, i.start, i.end) for i in incidents}
        false_alerts += [s for s in signals if not any(k == s.key_id and a <= s.detected_at <= b for k, a, b in windows)]
    recall = found / total
    print(f"\noff-hours recall {found}/{total} = {recall:.2f} (night {by_kind['night'][0]}/{by_kind['night'][1]}, "
          f"weekend {by_kind['weekend'][0]}/{by_kind['weekend'][1]}); other signals on these keys: {len(false_alerts)}")
    for signal in false_alerts:
        print("  ", signal.message)
    assert recall >= 0.95 and by_kind["weekend"][1] >= 5 and by_kind["night"][1] >= 5
    assert false_alerts == []


def test_the_signal_says_observed_vs_expected_and_links_the_incident_window():
    incidents, signals, _ = run_office_keys(5, 4, [UnusualHourDetector()])
    for incident in incidents:
        (signal,) = [s for s in signals if s.key_id == incident.key_id]
        assert signal.observed == 1.0 and 0 < signal.expected <= 0.25
        assert signal.window_start <= incident.start < signal.window_end
        (link,) = signal.evidence["timeline"]
        assert link.startswith(f"/v1/usage/key_timeline?key_id={incident.key_id}&since=")


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_keys_used_around_the_clock_are_never_flagged(seed):
    rng = random.Random(seed)
    keys = [
        KeyTraffic(key_id=f"key_clock_{seed}_{i}", daily_requests=10 ** rng.uniform(math.log10(0.05), math.log10(2)) * 1440,
                   rhythm=rng.choice(("flat", "diurnal")), weekend_share=rng.choice((0.3, 1.0)))
        for i in range(10)
    ]
    result = simulate(UsageAggregator(detectors=[UnusualHourDetector()]), keys, 21, seed=seed)
    assert result.signals == []
    states = [result.states.get(k.key_id).detector_state["unusual_hour"] for k in keys]
    assert all(memory["n"] > 24 * 21 * 0.4 for memory in states)  # they really were active around the clock
