"""Realistic synthetic usage for benchmarks and demos, fast enough for ten million events.

Every key belongs to a project, calls one service from a stable pool of addresses, and follows
a caller profile: when in the day and week it is busy (in its own time zone), how many networks
it calls from, how often it is refused. Services have their own route mix, latencies, payload
sizes and error rates. A few incidents are laid on top (a leaked key used from many networks at
odd hours, a revoked key a forgotten job keeps calling, a burst of denied requests), so the
security queries have something to find.

The hot path builds plain dicts and serialises them with orjson; no pydantic model per event.
Output is in event-time order, hour by hour, and deterministic for a given seed and end time.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

HOUR_MS = 3_600_000
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True, slots=True)
class Route:
    """One templated route of a service, how often it is called and what it costs."""

    method: str
    route: str
    weight: float
    latency_ms: float
    """Median latency; the generator draws from a log-normal around it."""
    response_bytes: int
    request_bytes: int = 0


@dataclass(frozen=True, slots=True)
class Service:
    """An API protected by keys: its routes and how often it fails."""

    name: str
    routes: tuple[Route, ...]
    error_rate: float
    not_found_rate: float = 0.01


@dataclass(frozen=True, slots=True)
class CallerProfile:
    """How a kind of client uses its key: daily and weekly rhythm (local time), addresses, refusals."""

    name: str
    hourly: tuple[float, ...]
    """24 relative weights, local hour 0..23."""
    weekly: tuple[float, ...]
    """7 relative weights, Monday..Sunday."""
    networks: tuple[int, int]
    """How many networks the key calls from (inclusive range)."""
    hosts_per_network: tuple[int, int]
    denial_rate: float
    rate_limited_rate: float
    user_agents: tuple[str, ...]
    share: float
    """Fraction of keys with this profile."""


@dataclass(frozen=True, slots=True)
class GeneratedKey:
    """A key the generator drives, with everything that makes its traffic recognisable."""

    key_id: str
    project_id: str
    service: Service
    profile: CallerProfile
    weight: float
    addresses: tuple[str, ...]
    user_agent: str
    utc_offset_hours: int


@dataclass(frozen=True, slots=True)
class Incident:
    """Something a security team would want to find, laid over normal traffic."""

    kind: str
    """`leak` (many new networks, odd hours), `revoked_use` (a revoked key still called) or `denial_storm`."""
    key_id: str
    project_id: str
    start_ms: int
    end_ms: int
    events: int
    description: str


ROUTES_ORDERS = (
    Route("GET", "/v1/orders", 30, 35, 6000),
    Route("GET", "/v1/orders/{order_id}", 40, 12, 1500),
    Route("POST", "/v1/orders", 12, 80, 900, 1200),
    Route("PUT", "/v1/orders/{order_id}", 5, 60, 900, 800),
    Route("DELETE", "/v1/orders/{order_id}", 1, 40, 0),
    Route("GET", "/v1/orders/{order_id}/items", 12, 20, 3000),
)
ROUTES_BILLING = (
    Route("GET", "/v1/invoices", 25, 45, 8000),
    Route("GET", "/v1/invoices/{invoice_id}", 30, 15, 2200),
    Route("POST", "/v1/charges", 20, 180, 700, 600),
    Route("POST", "/v1/refunds", 2, 220, 500, 400),
    Route("GET", "/v1/customers/{customer_id}", 23, 10, 1200),
)
ROUTES_SEARCH = (
    Route("GET", "/v1/search", 70, 55, 14000),
    Route("GET", "/v1/suggest", 25, 8, 600),
    Route("POST", "/v1/search/batch", 5, 400, 60000, 3000),
)
ROUTES_REPORTS = (
    Route("POST", "/v1/exports", 10, 900, 400, 300),
    Route("GET", "/v1/exports/{export_id}", 40, 25, 300),
    Route("GET", "/v1/exports/{export_id}/download", 20, 1500, 2_000_000),
    Route("GET", "/v1/metrics", 30, 120, 25000),
)
ROUTES_INVENTORY = (
    Route("GET", "/v2/products", 35, 30, 12000),
    Route("GET", "/v2/products/{sku}", 35, 9, 1800),
    Route("PATCH", "/v2/products/{sku}/stock", 25, 25, 300, 150),
    Route("POST", "/v2/products", 5, 70, 1800, 2000),
)

SERVICES = (
    Service("orders-api", ROUTES_ORDERS, error_rate=0.004),
    Service("billing-api", ROUTES_BILLING, error_rate=0.002),
    Service("search-api", ROUTES_SEARCH, error_rate=0.008),
    Service("reports-api", ROUTES_REPORTS, error_rate=0.015),
    Service("inventory-api", ROUTES_INVENTORY, error_rate=0.003),
)

_OFFICE = (0.2, 0.1, 0.1, 0.1, 0.1, 0.2, 0.5, 1.5, 4, 7, 8, 8, 6, 7, 8, 8, 7, 5, 3, 2, 1.2, 0.8, 0.5, 0.3)
_EVENING = (2, 1.2, 0.6, 0.3, 0.2, 0.2, 0.5, 1.5, 2.5, 3, 3, 3.5, 4, 3.5, 3, 3, 3.5, 4.5, 6, 7.5, 8, 7, 5, 3.2)
_NIGHTLY = (0.3, 6, 9, 9, 5, 1, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1)
_STEADY = (4, 4, 4, 4, 4, 4, 4.5, 5, 5.5, 6, 6, 6, 6, 6, 6, 6, 6, 5.5, 5, 5, 4.5, 4.5, 4, 4)
_WORKDAYS = (1.0, 1.05, 1.05, 1.0, 0.9, 0.15, 0.1)
_EVERY_DAY = (1.0, 1.0, 1.0, 1.0, 1.05, 1.1, 1.1)

PROFILES = (
    CallerProfile(
        "backend", _OFFICE, (1.0, 1.0, 1.0, 1.0, 0.95, 0.45, 0.4), (1, 2), (2, 6),
        denial_rate=0.0005, rate_limited_rate=0.001,
        user_agents=("python-httpx/0.27.0", "Go-http-client/2.0", "okhttp/4.12.0", "axios/1.7.2"), share=0.40,
    ),
    CallerProfile(
        "mobile-app", _EVENING, _EVERY_DAY, (6, 14), (3, 12),
        denial_rate=0.002, rate_limited_rate=0.004,
        user_agents=("ShopApp/5.2.1 (iOS 17.5)", "ShopApp/5.2.0 (Android 14)"), share=0.15,
    ),
    CallerProfile(
        "nightly-batch", _NIGHTLY, _EVERY_DAY, (1, 1), (1, 2),
        denial_rate=0.0002, rate_limited_rate=0.0005,
        user_agents=("etl-runner/3.4 python-requests/2.32.3", "airflow/2.9.2"), share=0.15,
    ),
    CallerProfile(
        "ci-pipeline", _OFFICE, _WORKDAYS, (1, 3), (4, 16),
        denial_rate=0.003, rate_limited_rate=0.0,
        user_agents=("GitHub-Actions curl/8.5.0", "gitlab-runner 17.0 curl/8.7.1"), share=0.10,
    ),
    CallerProfile(
        "partner-integration", _STEADY, _EVERY_DAY, (1, 2), (1, 4),
        denial_rate=0.001, rate_limited_rate=0.002,
        user_agents=("PartnerSync/1.9 (+https://partner.example)", "Java/17.0.11"), share=0.20,
    ),
)

PROJECT_NAMES = (
    "acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "wonka", "tyrell", "cyberdyne",
    "soylent", "aperture", "monarch", "oscorp", "vandelay", "duff", "gringotts", "pied-piper",
)
UTC_OFFSETS = (0, 1, 2, -5, -8, 8, 9, 5)

_ERROR_STATUSES = (500, 502, 503, 503, 504)
_REFUSALS = {
    # outcome: status
    "denied": 403,
    "invalid": 401,
    "expired": 401,
    "revoked": 401,
    "disabled": 403,
    "rate_limited": 429,
}


def _lognormal_table(sigma: float, size: int = 4096) -> tuple[float, ...]:
    """exp(N(0, sigma)) at evenly spaced quantiles: a table lookup instead of two gauss() calls per event."""
    from statistics import NormalDist

    normal = NormalDist(0.0, sigma)
    return tuple(math.exp(normal.inv_cdf((i + 0.5) / size)) for i in range(size))


_LATENCY_SPREAD = _lognormal_table(0.45)
_SIZE_SPREAD = _lognormal_table(0.6)


def _key_id(rng: random.Random) -> str:
    return "key_" + "".join(rng.choice(BASE62) for _ in range(20))


def _address_pool(rng: random.Random, networks: int, hosts: tuple[int, int], ipv6_share: float) -> tuple[str, ...]:
    """Stable addresses: a few hosts in each of a few networks (IPv4 /24s, sometimes IPv6 /64s)."""
    pool = []
    for _ in range(networks):
        count = rng.randint(*hosts)
        if rng.random() < ipv6_share:
            prefix = f"2001:db8:{rng.randrange(1, 0xFFFF):x}:{rng.randrange(0, 0xFFFF):x}"
            pool += [f"{prefix}::{rng.randrange(1, 0xFFFF):x}" for _ in range(count)]
        else:
            prefix = f"{rng.choice((34, 35, 52, 54, 104, 141, 185, 203))}.{rng.randrange(256)}.{rng.randrange(256)}"
            pool += [f"{prefix}.{host}" for host in rng.sample(range(2, 254), count)]
    return tuple(pool)


def _cumulative(weights: Sequence[float]) -> list[float]:
    return list(itertools.accumulate(weights))


@dataclass
class UsageGenerator:
    """Deterministic synthetic traffic for `key_count` keys over `days` days ending at `end`.

    `keys` may name existing keys as (key_id, project_id) pairs (e.g. keys created in the key
    store for a demo); otherwise ids are made up.
    """

    key_count: int = 100
    days: float = 7.0
    seed: int = 7
    end: datetime | None = None
    incidents: bool = True
    keys: Sequence[tuple[str, str]] | None = None
    generated_keys: list[GeneratedKey] = field(init=False)
    planned_incidents: list[Incident] = field(init=False)

    def __post_init__(self) -> None:
        if self.keys is not None:
            self.key_count = len(self.keys)
        if self.key_count < 1:
            raise ValueError("the generator needs at least one key")
        if self.days <= 0:
            raise ValueError("days must be positive")
        end = self.end or datetime.now(UTC)
        self.end = end.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        self._end_ms = int(self.end.timestamp() * 1000)
        self._hours = max(1, math.ceil(self.days * 24))
        self._start_ms = self._end_ms - self._hours * HOUR_MS
        rng = random.Random(f"keys:{self.seed}")
        self.generated_keys = self._make_keys(rng)
        self.planned_incidents = []

    @property
    def start(self) -> datetime:
        """The first instant events can fall on."""
        return datetime.fromtimestamp(self._start_ms / 1000, UTC)

    def _make_keys(self, rng: random.Random) -> list[GeneratedKey]:
        project_count = max(1, min(len(PROJECT_NAMES) * 4, round(self.key_count / 25) or 1))
        projects = [
            PROJECT_NAMES[i % len(PROJECT_NAMES)] + ("" if i < len(PROJECT_NAMES) else f"-{i // len(PROJECT_NAMES)}")
            for i in range(project_count)
        ]
        profile_weights = _cumulative([p.share for p in PROFILES])
        keys = []
        for index in range(self.key_count):
            if self.keys is not None:
                key_id, project_id = self.keys[index]
            else:
                key_id = _key_id(rng)
                project_id = "proj_" + projects[min(int(rng.paretovariate(1.2)) - 1, project_count - 1)]
            profile = PROFILES[bisect.bisect_left(profile_weights, rng.random() * profile_weights[-1])]
            networks = rng.randint(*profile.networks)
            keys.append(
                GeneratedKey(
                    key_id=key_id,
                    project_id=project_id,
                    service=SERVICES[rng.randrange(len(SERVICES))],
                    profile=profile,
                    # heavy-tailed popularity: a few keys carry most of the traffic
                    weight=1.0 / (index + 1) ** 0.9 * rng.uniform(0.6, 1.4),
                    addresses=_address_pool(rng, networks, profile.hosts_per_network, 0.15),
                    user_agent=rng.choice(profile.user_agents),
                    utc_offset_hours=rng.choice(UTC_OFFSETS),
                )
            )
        return keys

    # -- time ------------------------------------------------------------------------------

    def _class_intensity(self, rng: random.Random) -> tuple[list[tuple[CallerProfile, int]], list[list[float]]]:
        """Per hour of the span, the expected share of traffic of each (profile, UTC offset) class."""
        classes = sorted({(k.profile.name, k.utc_offset_hours) for k in self.generated_keys})
        by_name = {p.name: p for p in PROFILES}
        class_weight = dict.fromkeys(classes, 0.0)
        for key in self.generated_keys:
            class_weight[(key.profile.name, key.utc_offset_hours)] += key.weight
        day_noise = [rng.uniform(0.85, 1.15) for _ in range(self._hours // 24 + 2)]
        per_hour = []
        for hour in range(self._hours):
            at_ms = self._start_ms + hour * HOUR_MS
            trend = 0.9 + 0.2 * hour / self._hours
            weights = []
            for name, offset in classes:
                profile = by_name[name]
                local = datetime.fromtimestamp(at_ms / 1000 + offset * 3600, UTC)
                weights.append(
                    class_weight[(name, offset)]
                    * profile.hourly[local.hour]
                    * profile.weekly[local.weekday()]
                    * trend
                    * day_noise[hour // 24]
                    * rng.uniform(0.9, 1.1)
                )
            per_hour.append(weights)
        return [(by_name[n], o) for n, o in classes], per_hour

    @staticmethod
    def _allocate(total: int, weights: Sequence[float]) -> list[int]:
        """Split `total` in proportion to `weights`, exactly (largest remainder)."""
        whole = sum(weights) or 1.0
        raw = [total * w / whole for w in weights]
        counts = [int(r) for r in raw]
        short = total - sum(counts)
        for index in sorted(range(len(raw)), key=lambda i: raw[i] - counts[i], reverse=True)[:short]:
            counts[index] += 1
        return counts

    # -- incidents -------------------------------------------------------------------------

    def _plan_incidents(self, rng: random.Random, total: int) -> list[Incident]:
        if not self.incidents or self.key_count < 5 or self._hours < 6 or total < 1000:
            return []
        budget = max(30, total // 400)
        by_rank = self.generated_keys
        leak_key = by_rank[min(len(by_rank) - 1, 3)]
        revoked_key = by_rank[min(len(by_rank) - 1, max(4, len(by_rank) // 10))]
        storm_key = by_rank[min(len(by_rank) - 1, 2)]
        end = self._end_ms
        leak_start = end - HOUR_MS * min(self._hours // 2, 14)
        storm_start = end - HOUR_MS * min(self._hours // 3, 30) + 17 * 60_000
        revoked_at = end - HOUR_MS * min(self._hours // 2, 36)
        return [
            Incident(
                "leak", leak_key.key_id, leak_key.project_id, leak_start, leak_start + 3 * HOUR_MS, budget // 2,
                f"{leak_key.key_id} leaked: 3 h of customer enumeration from ~40 networks",
            ),
            Incident(
                "denial_storm", storm_key.key_id, storm_key.project_id, storm_start, storm_start + 12 * 60_000,
                budget // 3, f"{storm_key.key_id}: 12 min of denied requests from one new network",
            ),
            Incident(
                "revoked_use", revoked_key.key_id, revoked_key.project_id, revoked_at, end, budget - budget // 2 - budget // 3,
                f"{revoked_key.key_id} revoked, but a forgotten job keeps calling it",
            ),
        ]

    # -- events ----------------------------------------------------------------------------

    def events(self, count: int) -> Iterator[dict[str, Any]]:
        """`count` events as KeyUsageEvent v1 JSON objects (plain dicts), in event-time order."""
        rng = random.Random(f"events:{self.seed}")
        self.planned_incidents = self._plan_incidents(rng, count)
        incident_total = sum(i.events for i in self.planned_incidents)
        classes, per_hour = self._class_intensity(rng)
        hour_counts = self._allocate(count - incident_total, [sum(w) for w in per_hour])
        incident_hours = self._incident_hour_counts()
        class_keys: list[list[GeneratedKey]] = [[] for _ in classes]
        index_of = {(p.name, o): i for i, (p, o) in enumerate(classes)}
        for key in self.generated_keys:
            class_keys[index_of[(key.profile.name, key.utc_offset_hours)]].append(key)
        class_cum = [_cumulative([k.weight for k in keys]) for keys in class_keys]
        route_cum = {s.name: _cumulative([r.weight for r in s.routes]) for s in SERVICES}
        revoked_from = {i.key_id: i.start_ms for i in self.planned_incidents if i.kind == "revoked_use"}
        random_ = rng.random
        counter = 0
        for hour, n_events in enumerate(hour_counts):
            hour_ms = self._start_ms + hour * HOUR_MS
            prefix = datetime.fromtimestamp(hour_ms / 1000, UTC).strftime("%Y-%m-%dT%H:")
            cum = _cumulative(per_hour[hour])
            top = cum[-1]
            batch: list[tuple[int, GeneratedKey, str | None]] = []
            for _ in range(n_events):
                c = bisect.bisect_left(cum, random_() * top)
                if c >= len(cum):
                    c = len(cum) - 1
                kc = class_cum[c]
                k = bisect.bisect_left(kc, random_() * kc[-1])
                batch.append((int(random_() * HOUR_MS), class_keys[c][min(k, len(kc) - 1)], None))
            for incident, n in incident_hours.get(hour, ()):
                low = max(incident.start_ms - hour_ms, 0)
                high = min(incident.end_ms - hour_ms, HOUR_MS)
                key = self._key(incident.key_id)
                batch += [(low + int(random_() * (high - low)), key, incident.kind) for _ in range(n)]
            batch.sort(key=lambda item: item[0])
            for offset, key, incident_kind in batch:
                counter += 1
                yield self._event(
                    rng, key, hour_ms + offset, prefix, offset, incident_kind, route_cum, revoked_from, counter
                )

    def _incident_hour_counts(self) -> dict[int, list[tuple[Incident, int]]]:
        spread: dict[int, list[tuple[Incident, int]]] = {}
        for incident in self.planned_incidents:
            first = (incident.start_ms - self._start_ms) // HOUR_MS
            last = (incident.end_ms - 1 - self._start_ms) // HOUR_MS
            hours = list(range(first, last + 1))
            overlap = [
                min(incident.end_ms, self._start_ms + (h + 1) * HOUR_MS) - max(incident.start_ms, self._start_ms + h * HOUR_MS)
                for h in hours
            ]
            for hour, n in zip(hours, self._allocate(incident.events, overlap), strict=True):
                if n:
                    spread.setdefault(hour, []).append((incident, n))
        return spread

    def _key(self, key_id: str) -> GeneratedKey:
        return next(k for k in self.generated_keys if k.key_id == key_id)

    def _event(
        self,
        rng: random.Random,
        key: GeneratedKey,
        at_ms: int,
        prefix: str,
        offset_ms: int,
        incident: str | None,
        route_cum: dict[str, list[float]],
        revoked_from: dict[str, int],
        counter: int,
    ) -> dict[str, Any]:
        random_ = rng.random
        service = key.service
        cum = route_cum[service.name]
        route = service.routes[min(bisect.bisect_left(cum, random_() * cum[-1]), len(cum) - 1)]
        address = key.addresses[int(random_() * len(key.addresses))]
        user_agent = key.user_agent
        roll = random_()
        profile = key.profile
        outcome = "ok"
        status = 201 if route.method == "POST" else 200
        if roll < service.error_rate:
            outcome, status = "error", _ERROR_STATUSES[int(random_() * len(_ERROR_STATUSES))]
        elif roll < service.error_rate + profile.denial_rate:
            outcome, status = "denied", 403
        elif roll < service.error_rate + profile.denial_rate + profile.rate_limited_rate:
            outcome, status = "rate_limited", 429
        elif roll < service.error_rate + profile.denial_rate + profile.rate_limited_rate + service.not_found_rate:
            status = 404
        if incident == "leak":
            route = next((r for r in service.routes if "{" in r.route and r.method == "GET"), route)
            address = f"{rng.choice((45, 77, 91, 102, 176, 188, 193))}.{rng.randrange(40)}.{rng.randrange(3)}.{rng.randrange(2, 250)}"
            user_agent = "python-requests/2.31.0"
        elif incident == "denial_storm":
            outcome, status = ("denied", 403) if random_() < 0.9 else ("invalid", 401)
            address = f"185.220.101.{int(random_() * 30) + 2}"
            user_agent = "Mozilla/5.0 (X11; Linux x86_64) zgrab/0.x"
        if key.key_id in revoked_from and at_ms >= revoked_from[key.key_id]:
            outcome, status = "revoked", 401
        refused = outcome != "ok" and outcome != "error"
        latency = route.latency_ms * _LATENCY_SPREAD[int(random_() * 4096)]
        if refused:
            latency = min(latency, 3.0 + random_() * 4)
        ident = rng.getrandbits(128)
        h = f"{ident:032x}"
        minute, rest = divmod(offset_ms, 60_000)
        second, milli = divmod(rest, 1000)
        return {
            "event_id": f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[ident & 3]}{h[17:20]}-{h[20:]}",
            "schema_version": 1,
            "occurred_at": f"{prefix}{minute:02d}:{second:02d}.{milli:03d}Z",
            "key_id": key.key_id,
            "project_id": key.project_id,
            "service": service.name,
            "method": route.method,
            "route": route.route,
            "status": status,
            "outcome": outcome,
            "latency_ms": round(latency, 2),
            "request_bytes": int(route.request_bytes * (0.5 + random_())) if route.request_bytes else 0,
            "response_bytes": 0 if refused else int(route.response_bytes * _SIZE_SPREAD[int(random_() * 4096)]),
            "client_ip": address,
            "user_agent": user_agent,
            "request_id": f"req_{counter:012x}",
        }


def wire_json_lines(events: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    """KeyUsageEvent v1 JSON, one event per line (what `keytrail generate --out` writes)."""
    dumps = orjson.dumps
    for event in events:
        yield dumps(event) + b"\n"


def usage_event_row(event: dict[str, Any], on_time: bool = True) -> dict[str, Any]:
    """The `usage_events` row the ClickHouse sink writes for a generated (already valid) event."""
    row = dict(event)
    del row["schema_version"]
    row["occurred_at"] = event["occurred_at"][:-1].replace("T", " ")
    row["on_time"] = 1 if on_time else 0
    return row


def generation_summary(generator: UsageGenerator, events: int) -> dict[str, Any]:
    """What was generated: counts, span and the incidents laid on top (for humans and tests)."""
    return {
        "keys": len(generator.generated_keys),
        "projects": len({k.project_id for k in generator.generated_keys}),
        "events": events,
        "from": generator.start.isoformat().replace("+00:00", "Z"),
        "to": generator.end.isoformat().replace("+00:00", "Z") if generator.end else None,
        "incidents": [
            {
                "kind": i.kind,
                "key_id": i.key_id,
                "project_id": i.project_id,
                "from": datetime.fromtimestamp(i.start_ms / 1000, UTC).isoformat().replace("+00:00", "Z"),
                "to": datetime.fromtimestamp(i.end_ms / 1000, UTC).isoformat().replace("+00:00", "Z"),
                "events": i.events,
                "description": i.description,
            }
            for i in generator.planned_incidents
        ],
    }


def span_for(days: float) -> timedelta:
    """The time span a `--days` value covers."""
    return timedelta(hours=max(1, math.ceil(days * 24)))
