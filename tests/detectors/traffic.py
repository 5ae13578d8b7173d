"""Synthetic event-time traffic for detector tests: diurnal rhythms, weekly batch jobs, growth, moves.

Everything is seeded, so a simulation is reproducible. Events are built without pydantic validation
(they are valid by construction), which keeps weeks of traffic for hundreds of keys affordable.
"""

from __future__ import annotations

import itertools
import math
import random
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from keytrail.schemas.signals import Signal
from keytrail.schemas.usage import KeyUsageEvent, Outcome
from keytrail.stream_processors.core import UsageAggregator
from keytrail.stream_processors.core.state import OUTCOME_INDEX, MinuteAggregate
from keytrail.stream_processors.state_stores import InMemoryStates

SIM_START = datetime(2026, 3, 2, tzinfo=UTC)
"""A Monday, safely in the past (events are never in the future)."""
_FIELDS_SET = frozenset(KeyUsageEvent.model_fields)


def make_event(
    key_id: str,
    at: datetime,
    *,
    event_id: uuid.UUID,
    client_ip: str,
    method: str = "GET",
    route: str = "/v1/orders/{order_id}",
    outcome: Outcome = Outcome.OK,
    status: int = 200,
    service: str = "orders-api",
    project_id: str = "proj_sim",
) -> KeyUsageEvent:
    """A KeyUsageEvent built without validation: the caller passes only valid values (`at` in whole ms, UTC)."""
    event = _new(KeyUsageEvent)
    _set(
        event,
        "__dict__",
        {
            "event_id": event_id,
            "schema_version": 1,
            "occurred_at": at,
            "key_id": key_id,
            "project_id": project_id,
            "service": service,
            "method": method,
            "route": route,
            "status": status,
            "outcome": outcome,
            "latency_ms": 10.0,
            "request_bytes": 200,
            "response_bytes": 1500,
            "client_ip": client_ip,
            "user_agent": "sim/1.0",
            "request_id": "",
        },
    )
    _set(event, "__pydantic_fields_set__", set(_FIELDS_SET))
    _set(event, "__pydantic_extra__", None)
    _set(event, "__pydantic_private__", None)
    return event


_new = KeyUsageEvent.__new__
_set = object.__setattr__


def poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw (exact for small means, normal approximation above 40)."""
    if mean <= 0:
        return 0
    if mean > 40:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, product, count = math.exp(-mean), rng.random(), 0
    while product > limit:
        product *= rng.random()
        count += 1
    return count


@dataclass(frozen=True)
class BatchJob:
    """A job that runs every week at the same weekday and hour (0 = Monday); it grows with its key."""

    weekday: int
    hour: int
    minute: int = 5
    duration_minutes: int = 20
    per_minute: float = 80.0
    ips: tuple[str, ...] = ("10.20.40.7",)
    route: tuple[str, str] = ("POST", "/v1/exports")


@dataclass(frozen=True)
class KeyTraffic:
    """How one key is normally used."""

    key_id: str
    daily_requests: float = 500.0
    """Mean requests on a weekday at the start of the simulation (before growth)."""
    rhythm: str = "business"
    """`business` (weekday office hours, a little at night), `office` (office hours only), `diurnal`
    (smooth 24 h wave) or `flat`."""
    weekend_share: float = 0.3
    growth_per_week: float = 0.0
    hosts: tuple[str, ...] = ("10.20.30.11", "10.20.30.12")
    moved_hosts: tuple[str, ...] = ()
    move_day: int | None = None
    """From this day on the service runs on `moved_hosts` (a move inside its own network)."""
    routes: tuple[tuple[str, str, float], ...] = (
        ("GET", "/v1/orders/{order_id}", 0.6),
        ("GET", "/v1/orders", 0.3),
        ("POST", "/v1/orders", 0.1),
    )
    refusal_share: float = 0.002
    batch: BatchJob | None = None
    service: str = "orders-api"
    project_id: str = "proj_sim"
    day_noise: float = 0.15
    hour_noise: float = 0.2
    clustering: float = 0.3
    """Share of requests that follow the previous one within two seconds (page loads, retries)."""


def hour_weights(rhythm: str) -> list[float]:
    """Relative request rate per hour of a weekday (UTC)."""
    if rhythm == "business":
        weights = [0.02] * 24
        for hour in range(8, 18):
            weights[hour] = 1.0
        weights[7] = weights[18] = 0.4
        weights[6] = weights[19] = weights[20] = 0.1
        return weights
    if rhythm == "office":  # strictly office hours, nothing at night
        return [1.0 if 8 <= hour < 18 else 0.0 for hour in range(24)]
    if rhythm == "diurnal":
        return [1 + 0.8 * math.cos(2 * math.pi * (hour - 14) / 24) for hour in range(24)]
    return [1.0] * 24


def events_for_day(traffic: KeyTraffic, day: int, rng: random.Random, start: datetime = SIM_START) -> list[KeyUsageEvent]:
    """One key's events of simulation day `day`, in time order."""
    midnight = start + timedelta(days=day)
    weekday = midnight.weekday()
    weights = hour_weights(traffic.rhythm)
    total = sum(weights)
    growth = (1 + traffic.growth_per_week) ** (day / 7)
    volume = traffic.daily_requests * growth
    if weekday >= 5:
        volume *= traffic.weekend_share
    volume *= rng.lognormvariate(0, traffic.day_noise)
    hosts = traffic.moved_hosts if traffic.move_day is not None and day >= traffic.move_day else traffic.hosts
    choices = [(m, r) for m, r, _ in traffic.routes]
    cumulative = list(itertools.accumulate(w for _, _, w in traffic.routes))
    moments: list[tuple[int, str, tuple[str, str]]] = []
    uniform, chance, pick = rng.uniform, rng.random, rng.choice
    for hour in range(24):
        mean = volume * weights[hour] / total * rng.lognormvariate(0, traffic.hour_noise)
        offset = uniform(0, 3600)
        for _ in range(poisson(rng, mean)):
            if chance() >= traffic.clustering:
                offset = uniform(0, 3600)
            else:
                offset = min(3599.999, offset + uniform(0, 2))
            route = choices[0] if len(choices) == 1 else rng.choices(choices, cum_weights=cumulative)[0]
            moments.append((int((hour * 3600 + offset) * 1000), pick(hosts), route))
    job = traffic.batch
    if job is not None and job.weekday == weekday:
        for minute in range(job.duration_minutes):
            begin = job.hour * 3600 + (job.minute + minute) * 60
            for _ in range(poisson(rng, job.per_minute * growth)):
                moments.append((int((begin + uniform(0, 60)) * 1000), pick(job.ips), job.route))
    moments.sort(key=lambda item: item[0])
    events = []
    for offset_ms, ip, (method, route) in moments:
        refused = chance() < traffic.refusal_share
        events.append(
            make_event(
                traffic.key_id,
                midnight + timedelta(milliseconds=offset_ms),
                event_id=uuid.UUID(int=rng.getrandbits(128)),
                client_ip=ip,
                method=method,
                route=route,
                outcome=Outcome.RATE_LIMITED if refused else Outcome.OK,
                status=429 if refused else 200,
                service=traffic.service,
                project_id=traffic.project_id,
            )
        )
    return events


@dataclass
class SimulationResult:
    signals: list[Signal] = field(default_factory=list)
    events: int = 0
    states: InMemoryStates = field(default_factory=InMemoryStates)


def merged_days(
    traffics: Iterable[KeyTraffic], days: int, seed: int, start: datetime = SIM_START
) -> Iterator[list[KeyUsageEvent]]:
    """Each day's events of every key, merged in time order (one list per day)."""
    traffics = list(traffics)
    rngs = {t.key_id: random.Random(f"{seed}:{t.key_id}") for t in traffics}
    for day in range(days):
        merged: list[KeyUsageEvent] = []
        for traffic in traffics:
            merged.extend(events_for_day(traffic, day, rngs[traffic.key_id], start))
        merged.sort(key=lambda event: event.occurred_at)
        yield merged


def simulate(
    core: UsageAggregator,
    traffics: Iterable[KeyTraffic],
    days: int,
    *,
    seed: int = 7,
    batch_size: int = 5000,
    states: InMemoryStates | None = None,
    start: datetime = SIM_START,
    on_day: Callable[[int, InMemoryStates], None] | None = None,
) -> SimulationResult:
    """Run `days` of the keys' normal traffic through the core in batches; collect the signals."""
    result = SimulationResult(states=states if states is not None else InMemoryStates())
    for day, events in enumerate(merged_days(traffics, days, seed, start)):
        for begin in range(0, len(events), batch_size):
            result.signals.extend(core.process(events[begin : begin + batch_size], result.states).signals)
        result.events += len(events)
        if on_day is not None:
            on_day(day, result.states)
    return result


def random_population(count: int, seed: int, *, min_daily: float = 20, max_daily: float = 1500) -> list[KeyTraffic]:
    """`count` keys with normal, varied habits: volumes (log-uniform), rhythms, weekly jobs, growth,
    moves inside their own network after the learning period, occasional rate limiting."""
    rng = random.Random(seed)
    keys = []
    for index in range(count):
        site = rng.randrange(1, 250)
        public = rng.random() < 0.4
        if public:
            base = f"198.51.{site}"
            hosts = tuple(f"{base}.{rng.randrange(2, 250)}" for _ in range(rng.randint(1, 4)))
            moved = tuple(f"{base}.{rng.randrange(2, 250)}" for _ in range(len(hosts)))
        else:
            base = f"10.{site}.{rng.randrange(0, 200)}"
            hosts = tuple(f"{base}.{rng.randrange(2, 250)}" for _ in range(rng.randint(1, 4)))
            moved_base = f"10.{site}.{rng.randrange(200, 255)}"  # another /24 of the same private /16
            moved = tuple(f"{moved_base}.{rng.randrange(2, 250)}" for _ in range(len(hosts)))
        batch = None
        if rng.random() < 0.3:
            batch = BatchJob(
                weekday=rng.randrange(7),
                hour=rng.randrange(24),
                minute=rng.randrange(0, 40),
                duration_minutes=rng.randint(5, 30),
                per_minute=rng.uniform(20, 150),
                ips=(hosts[0],) if rng.random() < 0.5 else tuple(f"{base}.{200 + i}" for i in range(rng.randint(1, 3))),
            )
        keys.append(
            KeyTraffic(
                key_id=f"key_sim_{seed}_{index}",
                daily_requests=math.exp(rng.uniform(math.log(min_daily), math.log(max_daily))),
                rhythm=rng.choice(("business", "business", "diurnal", "flat")),
                weekend_share=rng.choice((0.05, 0.3, 1.0)),
                growth_per_week=rng.choice((0.0, 0.0, 0.05, 0.1)),
                hosts=hosts,
                moved_hosts=moved,
                move_day=rng.randint(15, 40) if rng.random() < 0.5 else None,
                refusal_share=rng.choice((0.0, 0.002, 0.01)),
                batch=batch,
                service=rng.choice(("orders-api", "billing-api", "search-api")),
            )
        )
    return keys


@dataclass(frozen=True)
class HeavyKey:
    """A busy key simulated at minute level (counts only), for the detectors that judge closed minutes."""

    key_id: str
    per_minute: float
    """Mean requests per minute on a weekday (before rhythm and growth)."""
    rhythm: str = "diurnal"
    weekend_share: float = 0.5
    growth_per_week: float = 0.0
    fleet: int = 4
    """Client hosts; a minute's distinct IPs follow from its requests."""
    refusal_share: float = 0.002
    batch: BatchJob | None = None


def heavy_population(count: int, seed: int) -> list[HeavyKey]:
    """Busy keys (about 5 to 2,000 requests a minute) with rhythms, growth, fleets and weekly jobs."""
    rng = random.Random(seed)
    keys = []
    for index in range(count):
        per_minute = math.exp(rng.uniform(math.log(5), math.log(2000)))
        batch = None
        if rng.random() < 0.3:
            batch = BatchJob(weekday=rng.randrange(7), hour=rng.randrange(24), minute=rng.randrange(30),
                             duration_minutes=rng.randint(5, 30), per_minute=per_minute * rng.uniform(2, 10),
                             ips=tuple(f"10.99.{index % 250}.{i}" for i in range(rng.randint(1, 30))))
        keys.append(HeavyKey(
            key_id=f"key_heavy_{seed}_{index}",
            per_minute=per_minute,
            rhythm=rng.choice(("business", "diurnal", "flat")),
            weekend_share=rng.choice((0.1, 0.5, 1.0)),
            growth_per_week=rng.choice((0.0, 0.05, 0.1)),
            fleet=rng.choice((1, 2, 4, 8, 30, 200)),
            refusal_share=rng.choice((0.0, 0.002, 0.01, 0.05)),
            batch=batch,
        ))
    return keys


def heavy_minutes(key: HeavyKey, days: int, rng: random.Random, start: datetime = SIM_START):
    """(minute_start_s, MinuteAggregate) of every active minute, hour by hour (lists of up to 60)."""
    weights = hour_weights(key.rhythm)
    mean_weight = sum(weights) / 24
    fleet = [f"10.77.{i // 250}.{i % 250}" for i in range(key.fleet)]
    start_s = int(start.timestamp())
    ok, limited = OUTCOME_INDEX[Outcome.OK], OUTCOME_INDEX[Outcome.RATE_LIMITED]
    for day in range(days):
        weekday = (start + timedelta(days=day)).weekday()
        growth = (1 + key.growth_per_week) ** (day / 7)
        day_factor = rng.lognormvariate(0, 0.15) * (key.weekend_share if weekday >= 5 else 1.0)
        for hour in range(24):
            rate = key.per_minute * growth * day_factor * weights[hour] / mean_weight * rng.lognormvariate(0, 0.2)
            minutes = []
            for minute in range(60):
                requests = poisson(rng, rate * rng.lognormvariate(0, 0.3))
                ips = fleet
                job = key.batch
                if job and job.weekday == weekday and job.hour == hour and job.minute <= minute < job.minute + job.duration_minutes:
                    requests += poisson(rng, job.per_minute * growth)
                    ips = fleet + list(job.ips)
                if not requests:
                    continue
                distinct = min(len(ips), requests) if requests < 3 * len(ips) else len(ips)
                refused = poisson(rng, key.refusal_share * requests)
                outcomes = [0] * len(OUTCOME_INDEX)
                outcomes[ok], outcomes[limited] = requests - min(refused, requests), min(refused, requests)
                aggregate = MinuteAggregate(requests=requests, outcomes=outcomes, ips=set(ips[:distinct]))
                minutes.append((start_s + ((day * 24 + hour) * 60 + minute) * 60, aggregate))
            if minutes:
                yield minutes
