"""A small, hand-written world for the canned queries, and the answers worked out by hand.

T0 is Monday 2026-11-02 09:00:00 UTC. Five keys in two projects:

- key_alpha (proj_a): an ordinary service calling orders-api from 10.1.2.3/.4; one 503, one
  refused call from 203.0.113.9 with another client, one call over IPv6 at 10:30, and one call
  three days earlier (its baseline).
- key_beta (proj_a): six refused calls in 50 seconds from 198.51.100.1-3 (a denial storm), then
  one normal call.
- key_gamma (proj_b): revoked at T0+30 min; a service still accepts it at T0+40 min, another
  refuses it at T0+45 min.
- key_delta (proj_b): five calls from four networks (three IPv4 /24s and an IPv6 /48); disabled
  between T0+2:30 and T0+3:30, and used once in between.
- key_idle (proj_a): used once, 40 days before T0.

The key store also knows key_never (proj_a, created 60 days before T0, never used) and key_new
(proj_b, created 2 days before T0, never used).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from keytrail.schemas.lifecycle import KeyLifecycleEvent, LifecycleAction
from keytrail.schemas.usage import KeyUsageEvent, Outcome

T0 = datetime(2026, 11, 2, 9, 0, 0, tzinfo=UTC)
WINDOW = {"since": T0 - timedelta(hours=1), "until": T0 + timedelta(hours=2)}
AT = T0 + timedelta(hours=2)

PROJECT = {
    "key_alpha": "proj_a",
    "key_beta": "proj_a",
    "key_gamma": "proj_b",
    "key_delta": "proj_b",
    "key_idle": "proj_a",
    "key_never": "proj_a",
    "key_new": "proj_b",
}
SERVICE = {"key_alpha": "orders-api", "key_beta": "orders-api", "key_gamma": "billing-api",
           "key_delta": "billing-api", "key_idle": "orders-api"}
CREATED = {
    "key_alpha": T0 - timedelta(days=20),
    "key_beta": T0 - timedelta(days=20),
    "key_gamma": T0 - timedelta(days=10),
    "key_delta": T0 - timedelta(days=10),
    "key_idle": T0 - timedelta(days=50),
    "key_never": T0 - timedelta(days=60),
    "key_new": T0 - timedelta(days=2),
}
KEY_LIST = list(CREATED)
"""What the key store would return: every key, with its creation time."""

CURL = "curl/8.5.0"
REQUESTS = "python-requests/2.31.0"
ZGRAB = "zgrab/0.x"


def _id(label: str) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"keytrail-test/{label}")


def event(
    label: str,
    key_id: str,
    at: datetime,
    route: str,
    status: int,
    outcome: str,
    ip: str,
    user_agent: str,
    *,
    method: str = "GET",
    latency_ms: float = 10.0,
) -> KeyUsageEvent:
    return KeyUsageEvent(
        event_id=_id(label),
        occurred_at=at,
        key_id=key_id,
        project_id=PROJECT[key_id],
        service=SERVICE[key_id],
        method=method,
        route=route,
        status=status,
        outcome=Outcome(outcome),
        latency_ms=latency_ms,
        request_bytes=100,
        response_bytes=2000,
        client_ip=ip,
        user_agent=user_agent,
        request_id=f"req-{label}",
    )


def s(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


EVENTS: list[KeyUsageEvent] = [
    event("a0", "key_alpha", T0 - timedelta(days=3), "/v1/orders", 200, "ok", "10.1.2.3", CURL, latency_ms=10),
    event("a1", "key_alpha", s(10), "/v1/orders", 200, "ok", "10.1.2.3", CURL, latency_ms=12),
    event("a2", "key_alpha", s(40), "/v1/orders", 200, "ok", "10.1.2.4", CURL, latency_ms=14),
    event("a3", "key_alpha", s(65), "/v1/orders", 503, "error", "10.1.2.3", CURL, method="POST", latency_ms=250),
    event("a4", "key_alpha", s(120), "/v1/orders/{order_id}", 403, "denied", "203.0.113.9", REQUESTS, latency_ms=3),
    event("a5", "key_alpha", s(5400), "/v1/orders", 200, "ok", "2001:db8:1:2::5", CURL, latency_ms=16),
    *[
        event(f"b{i + 1}", "key_beta", s(600 + 10 * i), "/v1/admin/users", status, outcome, f"198.51.100.{i % 3 + 1}", ZGRAB)
        for i, (status, outcome) in enumerate(
            [(403, "denied"), (403, "denied"), (403, "denied"), (401, "invalid"), (403, "denied"), (429, "rate_limited")]
        )
    ],
    event("b7", "key_beta", s(1200), "/v1/orders", 200, "ok", "10.9.9.9", "Go-http-client/2.0"),
    event("g1", "key_gamma", s(300), "/v1/invoices", 200, "ok", "192.0.2.10", "billing-cron/1.0"),
    event("g2", "key_gamma", s(2400), "/v1/invoices", 200, "ok", "192.0.2.10", "billing-cron/1.0"),
    event("g3", "key_gamma", s(2700), "/v1/invoices", 401, "revoked", "192.0.2.11", "billing-cron/1.0"),
    event("d1", "key_delta", s(60), "/v1/invoices/{invoice_id}", 200, "ok", "10.0.1.1", "okhttp/4.12.0"),
    event("d2", "key_delta", s(120), "/v1/invoices/{invoice_id}", 200, "ok", "10.0.2.1", "okhttp/4.12.0"),
    event("d3", "key_delta", s(180), "/v1/invoices/{invoice_id}", 200, "ok", "10.0.3.1", "okhttp/4.12.0"),
    event("d4", "key_delta", s(240), "/v1/invoices/{invoice_id}", 200, "ok", "2001:db8:aa:1::1", "okhttp/4.12.0"),
    event("d5", "key_delta", s(300), "/v1/invoices/{invoice_id}", 200, "ok", "10.0.1.2", "okhttp/4.12.0"),
    event("i1", "key_idle", T0 - timedelta(days=40), "/v1/orders", 200, "ok", "10.5.5.5", CURL),
]
EVENTS.sort(key=lambda e: (e.occurred_at, str(e.event_id)))


def lifecycle(label: str, key_id: str, at: datetime, action: LifecycleAction, reason: str = "") -> KeyLifecycleEvent:
    return KeyLifecycleEvent(
        event_id=_id(label),
        occurred_at=at,
        key_id=key_id,
        project_id=PROJECT[key_id],
        action=action,
        actor="admin@example.com",
        reason=reason,
        before=None if action is LifecycleAction.CREATED else {"status": "active"},
        after={"status": {"revoked": "revoked", "disabled": "disabled"}.get(action.value, "active")},
    )


LIFECYCLE: list[KeyLifecycleEvent] = [
    lifecycle("lc-alpha-created", "key_alpha", CREATED["key_alpha"], LifecycleAction.CREATED),
    lifecycle("lc-gamma-created", "key_gamma", CREATED["key_gamma"], LifecycleAction.CREATED),
    lifecycle("lc-gamma-revoked", "key_gamma", s(1800), LifecycleAction.REVOKED, "leaked in a public repository"),
    lifecycle("lc-delta-created", "key_delta", CREATED["key_delta"], LifecycleAction.CREATED),
    lifecycle("lc-delta-disabled", "key_delta", s(150), LifecycleAction.DISABLED, "investigating"),
    lifecycle("lc-delta-enabled", "key_delta", s(210), LifecycleAction.ENABLED, "false alarm"),
]


def lifecycle_rows(events: list[KeyLifecycleEvent]) -> bytes:
    """`key_lifecycle_events` rows (JSONEachRow) as a lifecycle sink would write them."""
    rows = []
    for item in events:
        data: dict[str, Any] = item.model_dump(mode="json")
        data.pop("schema_version")
        data["occurred_at"] = data["occurred_at"][:-1].replace("T", " ")
        data["before"] = orjson.dumps(item.before).decode()
        data["after"] = orjson.dumps(item.after).decode()
        rows.append(orjson.dumps(data))
    return b"\n".join(rows)


def iso(value: datetime) -> str:
    """How ClickHouse returns a DateTime64(3, 'UTC') in JSON."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


KEY_LIST_PARAMS = {"key_ids": KEY_LIST, "created_ats": [CREATED[k] for k in KEY_LIST], "at": AT}

SCOPED_CASES: list[tuple[str, dict[str, Any]]] = [
    ("key_timeline", {"key_id": "key_alpha", **WINDOW}),
    ("key_ips", {"key_id": "key_alpha", **WINDOW}),
    ("key_networks", {"key_id": "key_alpha", **WINDOW}),
    ("key_routes", {"key_id": "key_alpha", **WINDOW}),
    ("key_user_agents", {"key_id": "key_alpha", **WINDOW}),
    ("key_hours_of_week", {"key_id": "key_alpha", **WINDOW}),
    ("key_audit", {"key_id": "key_alpha", "since": T0 - timedelta(days=30), "until": AT}),
    ("top_keys", WINDOW),
    ("project_usage", WINDOW),
    ("keys_many_networks", {"min_networks": 1, **WINDOW}),
    ("denial_storms", {"min_denials": 1, **WINDOW}),
    ("inactive_key_use", WINDOW),
    ("idle_keys", {**KEY_LIST_PARAMS, "idle_days": 0}),
]
"""Canned queries whose rows carry a project_id, with parameters that find something in the fixture."""

ALL_CASES: list[tuple[str, dict[str, Any]]] = [
    *SCOPED_CASES,
    ("key_timeline", {"key_id": "key_gamma", "since": T0 - timedelta(days=60), "until": AT, "limit": 1000}),
    ("key_baseline", {"key_id": "key_alpha", "at": AT, "baseline_days": 7}),
    ("key_hours_of_week", {"key_id": "key_alpha", "since": T0 - timedelta(days=7), "until": AT}),
    ("top_keys", {"by": "denials", **WINDOW}),
    ("top_keys", {"since": T0 - timedelta(days=60), "until": AT}),
    ("project_usage", {"since": T0 - timedelta(days=60), "until": AT}),
    ("denial_storms", {"min_denials": 2, "bucket_minutes": 1, **WINDOW}),
    ("never_used_keys", {**KEY_LIST_PARAMS, "idle_days": 1}),
    ("idle_keys", {**KEY_LIST_PARAMS, "idle_days": 30}),
]
"""Every canned query at least once: the answers the duplicate tests compare."""
