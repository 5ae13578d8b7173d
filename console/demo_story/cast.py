"""The demo's cast: projects, services, keys with their habits, and the incidents laid on top.

Everything runs on simulated event time. Each key's traffic is a Poisson process whose rate follows
a daily rhythm; events of one key are produced in time order (the core ignores events older than
the allowed lateness relative to the key's newest one).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from keytrail.schemas.usage import KeyUsageEvent, Outcome

DAY = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Call:
    """One templated route of a service and its share of a client's calls."""

    method: str
    route: str
    weight: float


SERVICES: dict[str, tuple[Call, ...]] = {
    "checkout-api": (
        Call("GET", "/v1/orders/{order_id}", 5), Call("GET", "/v1/orders", 2),
        Call("POST", "/v1/orders", 2), Call("GET", "/v1/products/{sku}", 4),
    ),
    "catalog-api": (
        Call("GET", "/v1/products/{sku}", 6), Call("GET", "/v1/products", 3), Call("GET", "/v1/search", 3),
    ),
    "billing-api": (
        Call("GET", "/v1/invoices/{invoice_id}", 4), Call("GET", "/v1/invoices", 2),
        Call("POST", "/v1/invoices", 1), Call("GET", "/v1/customers/{customer_id}", 2),
    ),
    "reports-api": (Call("GET", "/v1/reports/daily", 3), Call("GET", "/v1/reports/{report_id}", 2)),
}


@dataclass(slots=True)
class Actor:
    """A demo key and the client that uses it: its service, addresses and daily rhythm."""

    slug: str
    name: str
    project: str
    service: str
    network: str
    """Private /24 prefix the client calls from, e.g. '10.20.30'."""
    per_minute: float
    """Average requests a minute at the busiest hour."""
    live_per_minute: float | None = None
    """Rate from the live phase on (a steady client makes minute-driven detectors judge promptly)."""
    peak_hour: int = 14
    night_share: float = 0.35
    active_from: timedelta = timedelta(days=21)
    """How long before the live phase the key's traffic starts."""
    active_until: timedelta | None = None
    """How long before the live phase the key's traffic stops (None = it keeps going)."""
    incident: str = ""
    """The incident this key plays in ('' = a normal key that must stay quiet)."""
    headline: str = ""
    expect_signals: tuple[str, ...] = ()
    expect_alerts: tuple[str, ...] = ()
    expires_in: timedelta | None = None
    key_id: str = ""
    secret: str = ""
    user_agent: str = "python-httpx/0.28"
    hosts: tuple[int, ...] = (11, 12, 13, 14)
    next_at: datetime | None = field(default=None, repr=False)

    def rate(self, moment: datetime) -> float:
        """Requests per second at `moment`: a smooth daily rhythm between night_share and 1 of the peak."""
        hour = moment.hour + moment.minute / 60
        rhythm = 0.5 + 0.5 * math.cos((hour - self.peak_hour) / 24 * 2 * math.pi)
        return self.per_minute / 60 * (self.night_share + (1 - self.night_share) * rhythm)


def cast() -> list[Actor]:
    """The keys of the demo: four normal ones and six that play an incident."""
    return [
        Actor("checkout-web", "checkout web frontend", "shop", "checkout-api", "10.20.30", 0.35),
        Actor("catalog-sync", "catalog sync job", "shop", "catalog-api", "10.20.41", 0.25, peak_hour=3),
        Actor("billing-worker", "billing worker", "payments", "billing-api", "10.30.8", 0.3, peak_hour=10),
        Actor("search-frontend", "search frontend", "search", "catalog-api", "10.50.2", 0.3, peak_hour=18),
        Actor(
            "partner-feed", "partner feed (leaked)", "shop", "checkout-api", "10.40.2", 0.25,
            incident="leaked key", headline="a partner's key leaks and is used from new public networks",
            expect_signals=("new_network",), expect_alerts=("new_network",),
        ),
        Actor(
            "legacy-reporting", "legacy reporting (revoked)", "payments", "reports-api", "10.30.77", 0.2,
            night_share=1.0, live_per_minute=0.5,
            incident="revoked key still tried",
            headline="a key is revoked, but a forgotten cron job keeps trying it",
            expect_signals=("use_of_inactive_key",), expect_alerts=("use_of_inactive_key",),
        ),
        Actor(
            "ml-batch", "ML batch export (dormant)", "search", "catalog-api", "10.50.90", 0.3,
            active_from=timedelta(days=56), active_until=timedelta(days=40),
            incident="dormant key wakes up",
            headline="a key silent for 40 days suddenly starts working again, from a new address",
            expect_signals=("dormant_key_active",), expect_alerts=("dormant_key_active",),
        ),
        Actor(
            "mobile-app", "mobile app backend (probed)", "shop", "catalog-api", "10.20.55", 0.3, night_share=1.0,
            live_per_minute=0.8,
            incident="route probing",
            headline="someone with the key probes admin and write routes it never called",
            expect_signals=("new_route", "denial_burst"), expect_alerts=("new_route", "denial_burst"),
        ),
        Actor(
            "old-exporter", "old exporter (idle)", "payments", "billing-api", "10.30.12", 0.2,
            active_from=timedelta(days=114), active_until=timedelta(days=100),
            incident="key left idle", headline="a key nobody has used for 100 days is still active",
            expect_alerts=("idle",),
        ),
        Actor(
            "invoice-sync", "invoice sync (expiring)", "payments", "billing-api", "10.30.20", 0.25,
            incident="key about to expire", headline="a key in daily use expires in 3 days",
            expect_alerts=("expiring_soon",), expires_in=timedelta(days=3),
        ),
    ]


def usage_event(
    rng: random.Random, actor: Actor, moment: datetime, *, call: Call | None = None, ip: str | None = None,
    outcome: Outcome = Outcome.OK, status: int | None = None, user_agent: str | None = None,
) -> KeyUsageEvent:
    """One request of `actor`'s key at `moment`."""
    call = call or rng.choices(SERVICES[actor.service], [c.weight for c in SERVICES[actor.service]])[0]
    if status is None:
        status = {Outcome.OK: 200, Outcome.DENIED: 403, Outcome.INVALID: 401}.get(outcome, 401)
    return KeyUsageEvent(
        event_id=UUID(int=rng.getrandbits(128), version=4),
        occurred_at=moment,
        key_id=actor.key_id,
        project_id=actor.project,
        service=actor.service,
        method=call.method,
        route=call.route,
        status=status,
        outcome=outcome,
        latency_ms=round(rng.lognormvariate(3.2, 0.5), 2),
        request_bytes=0 if call.method == "GET" else rng.randint(200, 2000),
        response_bytes=rng.randint(300, 9000) if status < 300 else 120,
        client_ip=ip or f"{actor.network}.{rng.choice(actor.hosts)}",
        user_agent=user_agent or actor.user_agent,
        request_id=f"req-{rng.getrandbits(48):012x}",
    )


def normal_traffic(
    rng: random.Random, actor: Actor, start: datetime, end: datetime, outcome: Outcome = Outcome.OK
) -> list[KeyUsageEvent]:
    """`actor`'s ordinary requests in [start, end), in time order (a thinned Poisson process)."""
    events: list[KeyUsageEvent] = []
    peak = actor.per_minute / 60
    pending = actor.next_at
    moment = pending if pending is not None and pending >= start else start + timedelta(seconds=rng.expovariate(peak))
    while moment < end:
        if rng.random() < actor.rate(moment) / peak:
            events.append(usage_event(rng, actor, moment, outcome=outcome))
        moment = moment + timedelta(seconds=rng.expovariate(peak))
    actor.next_at = moment
    return events


@dataclass(frozen=True, slots=True)
class Scene:
    """Something that happens at one point of the live phase (a fraction of it)."""

    at: float
    actor: str
    what: str


SCENES = (
    Scene(0.10, "legacy-reporting", "revoke"),
    Scene(0.20, "partner-feed", "leak"),
    Scene(0.35, "ml-batch", "wake"),
    Scene(0.50, "mobile-app", "probe"),
)
"""The incidents of the live phase, in order (fractions of its simulated span)."""

ATTACKER_NETWORKS = ("203.0.113", "198.51.100", "185.220.101")
PROBE_CALLS = (
    Call("DELETE", "/v1/products/{sku}", 1), Call("GET", "/v1/admin/users", 1), Call("GET", "/v1/admin/keys", 1),
    Call("GET", "/internal/debug/vars", 1), Call("PUT", "/v1/admin/settings", 1),
    Call("GET", "/v1/customers/export", 1),
)


def leak_events(rng: random.Random, actor: Actor, start: datetime) -> list[KeyUsageEvent]:
    """Scraping with the leaked key: three minutes, ~90 requests a minute from 36 public addresses."""
    ips = [f"{net}.{host}" for net in ATTACKER_NETWORKS for host in rng.sample(range(2, 250), 12)]
    calls = (Call("GET", "/v1/orders/{order_id}", 4), Call("GET", "/v1/orders", 1))
    moments = sorted(start + timedelta(seconds=rng.uniform(0, 180)) for _ in range(270))
    return [
        usage_event(rng, actor, m, call=rng.choices(calls, [c.weight for c in calls])[0], ip=rng.choice(ips),
                    user_agent="curl/8.5.0")
        for m in moments
    ]


def wake_events(rng: random.Random, actor: Actor, start: datetime) -> list[KeyUsageEvent]:
    """The dormant key's first requests in 40 days, from an address it never used."""
    moments = sorted(start + timedelta(seconds=rng.uniform(0, 240)) for _ in range(25))
    return [usage_event(rng, actor, m, ip="198.51.100.77", user_agent="Go-http-client/1.1") for m in moments]


def probe_events(rng: random.Random, actor: Actor, start: datetime) -> list[KeyUsageEvent]:
    """Route probing: two minutes of admin and write routes, mostly refused (403) or not found (404)."""
    events = []
    for index in range(70):
        moment = start + timedelta(seconds=index * 120 / 70)
        call = PROBE_CALLS[index % len(PROBE_CALLS)]
        refused = rng.random() < 0.85
        events.append(usage_event(
            rng, actor, moment, call=call, ip="45.155.205.19",
            outcome=Outcome.DENIED if refused else Outcome.OK, status=403 if refused else 404,
            user_agent="Mozilla/5.0 (compatible; scanner)",
        ))
    return events


def scene_events(rng: random.Random, actor: Actor, what: str, start: datetime) -> list[KeyUsageEvent]:
    """The events an incident adds to `actor`'s normal traffic ('revoke' adds none: it changes the key)."""
    makers: dict[str, Any] = {"leak": leak_events, "wake": wake_events, "probe": probe_events}
    return makers[what](rng, actor, start) if what in makers else []
