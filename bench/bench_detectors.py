"""Throughput of the core with and without the default detectors, and state bytes per key.

    .venv/bin/python bench/bench_detectors.py [--keys 2000] [--events 300000] [--batch 5000] [--repeat 3]

Synthetic, seeded traffic: each key has a steady rate with a daily rhythm, a few client IPs in one or
two networks and a handful of routes, a little rate limiting, and (for some keys) a weekly burst;
events of all keys are merged in event-time order and cut into batches, as a Kafka `take` delivers
them. Only `UsageAggregator.process` is timed (CPU time of the process, so other load on the machine
skews it less), on one core, over fresh states each run; runs with and
without detectors alternate and the best of `--repeat` is reported. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import gc
import platform
import random
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

import orjson

from keytrail.schemas.usage import KeyUsageEvent, Outcome
from keytrail.stream_processors.core import UsageAggregator
from keytrail.stream_processors.detectors import default_detectors
from keytrail.stream_processors.state_stores import InMemoryStates

START = datetime(2026, 3, 2, tzinfo=UTC)
ROUTES = (("GET", "/v1/orders/{order_id}"), ("GET", "/v1/orders"), ("POST", "/v1/orders"),
          ("GET", "/v1/customers/{customer_id}"), ("DELETE", "/v1/orders/{order_id}"))
_FIELDS = frozenset(KeyUsageEvent.model_fields)


def _event(key_id: str, at: datetime, ip: str, route: tuple[str, str], refused: bool, event_id: uuid.UUID) -> KeyUsageEvent:
    """A valid event built without validation (validation is the decoder's cost, not the core's)."""
    event = KeyUsageEvent.__new__(KeyUsageEvent)
    object.__setattr__(event, "__dict__", {
        "event_id": event_id, "schema_version": 1, "occurred_at": at, "key_id": key_id, "project_id": "proj_bench",
        "service": "orders-api", "method": route[0], "route": route[1], "status": 429 if refused else 200,
        "outcome": Outcome.RATE_LIMITED if refused else Outcome.OK, "latency_ms": 8.0, "request_bytes": 300,
        "response_bytes": 2000, "client_ip": ip, "user_agent": "bench/1.0", "request_id": "",
    })
    object.__setattr__(event, "__pydantic_fields_set__", set(_FIELDS))
    object.__setattr__(event, "__pydantic_extra__", None)
    object.__setattr__(event, "__pydantic_private__", None)
    return event


def synthetic_events(keys: int, total: int, seed: int = 1) -> list[KeyUsageEvent]:
    """`total` events over `keys` keys, merged in time order, spanning about a day per 1000 events per key."""
    rng = random.Random(seed)
    weights = [rng.paretovariate(1.2) for _ in range(keys)]  # a few busy keys, many quiet ones
    scale = total / sum(weights)
    span_s = 3 * 86_400
    events: list[tuple[int, KeyUsageEvent]] = []
    for index, weight in enumerate(weights):
        count = max(1, round(weight * scale))
        key_id = f"key_bench_{index}"
        site = f"10.{index % 250}.{rng.randrange(200)}"
        ips = [f"{site}.{rng.randrange(2, 250)}" for _ in range(rng.randint(1, 4))]
        routes = rng.sample(ROUTES, rng.randint(2, len(ROUTES)))
        for _ in range(count):
            second = rng.uniform(0, span_s)
            if rng.random() < 0.5:  # daytime-heavy rhythm
                second = (second // 86_400) * 86_400 + rng.uniform(8, 18) * 3600
            at_ms = int(second * 1000)
            events.append((at_ms, _event(key_id, START + timedelta(milliseconds=at_ms), rng.choice(ips),
                                         rng.choice(routes), rng.random() < 0.005, uuid.UUID(int=rng.getrandbits(128)))))
    events.sort(key=lambda item: item[0])
    return [event for _, event in events]


def run(events: list[KeyUsageEvent], batch: int, with_detectors: bool) -> tuple[float, InMemoryStates, int]:
    core = UsageAggregator(allowed_lateness_s=300, detectors=default_detectors() if with_detectors else ())
    states = InMemoryStates()
    signals = 0
    gc.collect()
    started = time.process_time()
    for begin in range(0, len(events), batch):
        signals += len(core.process(events[begin : begin + batch], states).signals)
    return time.process_time() - started, states, signals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=2000)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    events = synthetic_events(args.keys, args.events)
    best = {False: float("inf"), True: float("inf")}
    states: dict[bool, InMemoryStates] = {}
    signals = 0
    for _ in range(args.repeat):
        for with_detectors in (False, True):
            seconds, states[with_detectors], found = run(events, args.batch, with_detectors)
            best[with_detectors] = min(best[with_detectors], seconds)
            signals = found if with_detectors else signals

    def state_bytes(mapping: InMemoryStates) -> list[int]:
        return [len(state.to_bytes()) for state in mapping.values()]

    plain, full = state_bytes(states[False]), state_bytes(states[True])
    detector_only = [len(orjson.dumps(state.detector_state)) for state in states[True].values()]
    n = len(events)
    print(f"### Detectors benchmark — {n:,} events, {len(states[True]):,} keys, batches of {args.batch:,}")
    print(f"Python {platform.python_version()} on {platform.machine()}, one core, best of {args.repeat}; "
          f"{signals} signals raised (learning periods mostly still running).\n")
    print("| configuration | events/s | µs/event |")
    print("|---|---:|---:|")
    for label, with_detectors in (("core, no detectors", False), ("core + default detectors (8)", True)):
        seconds = best[with_detectors]
        print(f"| {label} | {n / seconds:,.0f} | {seconds / n * 1e6:.1f} |")
    print(f"\ndetector overhead: {best[True] / best[False] - 1:+.0%} time per event\n")
    print("| state per key (bytes) | median | mean | p95 | max |")
    print("|---|---:|---:|---:|---:|")
    for label, values in (("KeyState, no detectors", plain), ("KeyState with detectors", full),
                          ("detector memory alone", detector_only)):
        ordered = sorted(values)
        p95 = ordered[int(0.95 * (len(ordered) - 1))]
        print(f"| {label} | {statistics.median(ordered):,.0f} | {statistics.fmean(ordered):,.0f} | {p95:,} | {ordered[-1]:,} |")


if __name__ == "__main__":
    main()
