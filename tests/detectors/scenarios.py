"""Small, exact event-time scenarios for detector unit tests (deterministic, no randomness)."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from keytrail.schemas.signals import Signal
from keytrail.schemas.usage import KeyUsageEvent, Outcome
from keytrail.stream_processors.core import UsageAggregator
from keytrail.stream_processors.core.aggregate import Detector
from keytrail.stream_processors.state_stores import InMemoryStates
from tests.detectors.traffic import SIM_START, make_event

START = SIM_START
"""Monday 2026-03-02 00:00 UTC."""
_ids = itertools.count(1)


def event(
    key_id: str,
    at: datetime,
    *,
    ip: str = "10.20.30.11",
    method: str = "GET",
    route: str = "/v1/orders/{order_id}",
    outcome: Outcome = Outcome.OK,
    status: int | None = None,
    service: str = "orders-api",
) -> KeyUsageEvent:
    """One event at `at` (whole milliseconds)."""
    if status is None:
        status = {Outcome.OK: 200, Outcome.RATE_LIMITED: 429, Outcome.ERROR: 500}.get(outcome, 403)
    return make_event(
        key_id,
        at.replace(microsecond=at.microsecond // 1000 * 1000),
        event_id=uuid.UUID(int=next(_ids)),
        client_ip=ip,
        method=method,
        route=route,
        outcome=outcome,
        status=status,
        service=service,
        project_id="proj_a",
    )


def steady(
    key_id: str,
    *,
    days: float,
    start: datetime = START,
    every_s: int = 600,
    hours: Iterable[int] = range(24),
    weekdays: Iterable[int] = range(7),
    ips: Sequence[str] = ("10.20.30.11", "10.20.30.12"),
    routes: Sequence[tuple[str, str]] = (("GET", "/v1/orders/{order_id}"), ("GET", "/v1/orders")),
) -> list[KeyUsageEvent]:
    """One request every `every_s` seconds during the given hours and weekdays, cycling IPs and routes."""
    hours, weekdays = set(hours), set(weekdays)
    events = []
    end = start + timedelta(days=days)
    at, index = start, 0
    while at < end:
        if at.hour in hours and at.weekday() in weekdays:
            method, route = routes[index % len(routes)]
            events.append(event(key_id, at, ip=ips[index % len(ips)], method=method, route=route))
            index += 1
        at += timedelta(seconds=every_s)
    return events


def burst(
    key_id: str,
    at: datetime,
    count: int,
    *,
    ips: Sequence[str] = ("10.20.30.11",),
    route: str = "/v1/orders/{order_id}",
    method: str = "GET",
    outcome: Outcome = Outcome.OK,
) -> list[KeyUsageEvent]:
    """`count` requests spread over the minute starting at `at`, cycling IPs."""
    step = 59_000 // max(count, 1)
    return [
        event(key_id, at + timedelta(milliseconds=i * step), ip=ips[i % len(ips)], method=method, route=route,
              outcome=outcome)
        for i in range(count)
    ]


def run(
    detectors: Sequence[Detector],
    events: Sequence[KeyUsageEvent],
    *,
    states: InMemoryStates | None = None,
    batch_size: int = 2000,
) -> tuple[list[Signal], InMemoryStates]:
    """Process `events` (sorted by time) in batches through a core with `detectors`; all signals."""
    core = UsageAggregator(allowed_lateness_s=300, detectors=detectors)
    states = states if states is not None else InMemoryStates()
    signals: list[Signal] = []
    ordered = sorted(events, key=lambda e: e.occurred_at)
    for begin in range(0, len(ordered), batch_size):
        signals.extend(core.process(ordered[begin : begin + batch_size], states).signals)
    return signals, states


def later(events: Sequence[KeyUsageEvent], minutes: int = 10) -> KeyUsageEvent:
    """An ordinary event `minutes` after the last one: it moves the watermark so earlier minutes close."""
    last = max(events, key=lambda e: e.occurred_at)
    return event(last.key_id, last.occurred_at + timedelta(minutes=minutes), ip=last.client_ip,
                 method=last.method, route=last.route)
