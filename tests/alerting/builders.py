"""Signals, keys and engines for alerting tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pydantic import SecretStr

from keytrail.schemas.keys import KeyRecord, KeyStatus
from keytrail.schemas.signals import Severity, Signal, SignalKind, signal_id_for
from keytrail.stream_processors.alerting.delivery import AlertDispatcher, WebhookSender
from keytrail.stream_processors.alerting.engine import AlertEngine
from keytrail.stream_processors.alerting.rules import AlertRules, Channel
from keytrail.stream_processors.alerting.store import AlertStore, DeliveryLog

NOW = datetime(2026, 11, 2, 9, 0, 0, tzinfo=UTC)
SECRET = "whsec-test-0123456789"


def revoked_use_signal(
    key_id: str = "key_a",
    *,
    at: datetime = NOW,
    ip: str = "203.0.113.7",
    route: str = "GET /v1/orders/{order_id}",
    project_id: str = "proj_a",
) -> Signal:
    window_start = at.replace(minute=0, second=0, microsecond=0)
    return Signal(
        signal_id=signal_id_for(key_id, SignalKind.USE_OF_INACTIVE_KEY.value, window_start.isoformat()),
        key_id=key_id,
        project_id=project_id,
        kind=SignalKind.USE_OF_INACTIVE_KEY,
        severity=Severity.CRITICAL,
        score=10.0,
        observed=1.0,
        expected=0.0,
        window_start=window_start,
        window_end=window_start + timedelta(hours=1),
        detected_at=at,
        evidence={"ips": [ip], "routes": [route], "outcomes": ["revoked"]},
        message=f"Key {key_id} is revoked but was used from {ip} ({route}).",
    )


def anomaly_signal(kind: SignalKind, severity: Severity, key_id: str = "key_a", at: datetime = NOW) -> Signal:
    return Signal(
        signal_id=signal_id_for(key_id, kind.value, at.isoformat()),
        key_id=key_id,
        project_id="proj_a",
        kind=kind,
        severity=severity,
        score=3.0,
        observed=10.0,
        expected=1.0,
        window_start=at,
        window_end=at + timedelta(minutes=1),
        detected_at=at,
        evidence={"ips": ["198.51.100.1"]},
        message=f"{kind.value} on {key_id}",
    )


def key_record(
    key_id: str = "key_a",
    *,
    created_days_ago: float = 200,
    last_used_days_ago: float | None = 1,
    expires_in_days: float | None = None,
    quota: int | None = None,
    status: KeyStatus = KeyStatus.ACTIVE,
    now: datetime = NOW,
) -> KeyRecord:
    return KeyRecord(
        id=key_id,
        name=f"{key_id} name",
        project_id="proj_a",
        status=status,
        quota=quota,
        created_at=now - timedelta(days=created_days_ago),
        last_used_at=None if last_used_days_ago is None else now - timedelta(days=last_used_days_ago),
        last_used_ip=None if last_used_days_ago is None else "10.0.0.9",
        expires_at=None if expires_in_days is None else now + timedelta(days=expires_in_days),
        display_prefix="kt_live_",
        hint="9f3a",
    )


def fast_sender(**kwargs) -> WebhookSender:  # noqa: ANN003
    options = {"timeout_s": 5.0, "max_attempts": 4, "backoff_s": 0.01, "max_backoff_s": 0.05}
    options.update(kwargs)
    return WebhookSender(**options)


def webhook_rules(url: str, **overrides) -> AlertRules:  # noqa: ANN003
    channel = Channel(name="oncall", url=url, format="webhook", secret=SecretStr(SECRET))
    return AlertRules(channels=[channel], **overrides)


def engine_on(
    store: AlertStore,
    deliveries: DeliveryLog,
    rules: AlertRules,
    sender: WebhookSender | None = None,
    **kwargs,
) -> AlertEngine:  # noqa: ANN003
    dispatcher = AlertDispatcher(deliveries, rules.all_channels(), sender or fast_sender(), clock=lambda: NOW)
    return AlertEngine(store, rules, dispatcher=dispatcher, clock=lambda: NOW, **kwargs)
