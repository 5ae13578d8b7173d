"""Synthetic usage events for demos, tests and benchmarks (deterministic with a seed)."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from schemas.usage import KeyUsageEvent, Outcome

ROUTES = ("/v1/orders", "/v1/orders/{order_id}", "/v1/customers/{customer_id}", "/v1/invoices", "/v1/search")
METHODS = ("GET", "GET", "GET", "POST", "PUT")
USER_AGENTS = ("billing-svc/2.3 python-httpx/0.27", "curl/8.5.0", "Go-http-client/1.1", "okhttp/4.12.0")


@dataclass(frozen=True)
class SyntheticKey:
    """A key the generator uses, with the service and the small address pool it calls from."""

    key_id: str
    project_id: str
    service: str
    network: str = "10.20.30"


def synthetic_events(
    keys: Sequence[SyntheticKey],
    count: int,
    *,
    start: datetime,
    span: timedelta,
    seed: int = 7,
) -> Iterator[KeyUsageEvent]:
    """`count` events spread over `span` from `start`, in time order, skewed towards the first keys."""
    rng = random.Random(seed)
    weights = [1.0 / (i + 1) for i in range(len(keys))]
    step = span / max(count, 1)
    for index in range(count):
        key = rng.choices(keys, weights)[0]
        route_index = rng.randrange(len(ROUTES))
        roll = rng.random()
        outcome, status = (Outcome.OK, 200)
        if roll < 0.01:
            outcome, status = (Outcome.ERROR, 503)
        elif roll < 0.02:
            outcome, status = (Outcome.RATE_LIMITED, 429)
        yield KeyUsageEvent(
            event_id=uuid.UUID(int=rng.getrandbits(128), version=4),
            occurred_at=start + step * index,
            key_id=key.key_id,
            project_id=key.project_id,
            service=key.service,
            method=METHODS[route_index],
            route=ROUTES[route_index],
            status=status,
            outcome=outcome,
            latency_ms=round(rng.lognormvariate(3, 0.5), 2),
            request_bytes=rng.randrange(0, 2000),
            response_bytes=rng.randrange(100, 20000),
            client_ip=f"{key.network}.{rng.randrange(1, 8)}",
            user_agent=USER_AGENTS[hash(key.key_id) % len(USER_AGENTS)],
            request_id=f"req-{index}",
        )
