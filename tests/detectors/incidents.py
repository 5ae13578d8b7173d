"""Labelled incidents laid on top of the simulated normal traffic of `traffic`: rate spikes on quiet
keys, off-hours use of office-hours keys, keys that stop. Seeded and deterministic."""

from __future__ import annotations

import math
import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from keytrail.schemas.signals import Signal
from keytrail.schemas.usage import KeyUsageEvent
from keytrail.stream_processors.core import UsageAggregator
from keytrail.stream_processors.core.aggregate import Detector
from keytrail.stream_processors.state_stores import InMemoryStates
from tests.detectors.traffic import SIM_START, KeyTraffic, events_for_day, make_event, poisson


@dataclass(frozen=True)
class Incident:
    """`per_minute` extra requests a minute (Poisson) for `minutes` from `start`, from `ips`."""

    key_id: str
    start: datetime
    minutes: int
    per_minute: float
    ips: tuple[str, ...] = ("203.0.113.50",)
    route: tuple[str, str] = ("GET", "/v1/orders")

    @property
    def end(self) -> datetime:
        return self.start + timedelta(minutes=self.minutes)


def incident_events(incident: Incident, rng: random.Random) -> list[KeyUsageEvent]:
    events = []
    for minute in range(incident.minutes):
        begin = incident.start + timedelta(minutes=minute)
        for _ in range(poisson(rng, incident.per_minute)):
            at = begin + timedelta(milliseconds=rng.randrange(60_000))
            events.append(make_event(incident.key_id, at, event_id=uuid.UUID(int=rng.getrandbits(128)),
                                     client_ip=rng.choice(incident.ips), method=incident.route[0],
                                     route=incident.route[1], project_id="proj_sim"))
    return events


def quiet_key(key_id: str, per_minute: float, rhythm: str = "flat", **overrides) -> KeyTraffic:
    """A key making `per_minute` requests a minute on average over a weekday (0.05–2 is quiet)."""
    fields = {"daily_requests": per_minute * 1440, "rhythm": rhythm, "weekend_share": 1.0, "batch": None,
              "clustering": 0.0} | overrides
    return KeyTraffic(key_id=key_id, **fields)


def office_key(key_id: str, per_minute: float, **overrides) -> KeyTraffic:
    """Used only Mon–Fri in office hours (08:00–18:00 UTC), `per_minute` requests a minute then."""
    fields = {"daily_requests": per_minute * 600, "rhythm": "office", "weekend_share": 0.0, "batch": None,
              "clustering": 0.0} | overrides
    return KeyTraffic(key_id=key_id, **fields)


def key_events(traffic: KeyTraffic, days: int, seed: int, *, stop_at: datetime | None = None,
               start: datetime = SIM_START) -> list[KeyUsageEvent]:
    rng = random.Random(f"{seed}:{traffic.key_id}")
    events = [e for day in range(days) for e in events_for_day(traffic, day, rng, start)]
    if stop_at is not None:
        events = [e for e in events if e.occurred_at < stop_at]
    return events


def run_events(detectors: list[Detector], events: list[KeyUsageEvent], batch_size: int = 2000,
               states: InMemoryStates | None = None) -> tuple[list[Signal], InMemoryStates]:
    core = UsageAggregator(allowed_lateness_s=300, detectors=detectors)
    states = states if states is not None else InMemoryStates()
    ordered = sorted(events, key=lambda e: (e.occurred_at, e.event_id.int))
    signals: list[Signal] = []
    for begin in range(0, len(ordered), batch_size):
        signals.extend(core.process(ordered[begin : begin + batch_size], states).signals)
    return signals, states


def caught(signals: list[Signal], incident: Incident, kind: str, slack_minutes: int = 20) -> bool:
    """A signal of `kind` detected between the incident's start and its end plus `slack_minutes`."""
    until = incident.end + timedelta(minutes=slack_minutes)
    return any(s.kind.value == kind and s.key_id == incident.key_id and incident.start <= s.detected_at <= until
               for s in signals)


def log_uniform(rng: random.Random, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))
