"""End to end on the embedded default: real chDB and SQLite key store through EmbeddedPipeline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from keytrail.console.embedded import EmbeddedPipeline
from keytrail.keystore.store import KeyStore
from keytrail.schemas.lifecycle import LifecycleAction
from keytrail.schemas.usage import Outcome
from keytrail.settings import Settings
from keytrail.stream_processors.alerting.model import AlertStatus
from keytrail.stream_processors.alerting.rules import INACTIVE_KEY_USE
from keytrail.stream_processors.alerting.store import InMemoryDeliveryLog
from keytrail.stream_processors.alerting.wiring import build_alert_engine
from keytrail.stream_processors.detectors import default_detectors
from tests.alerting.builders import fast_sender, revoked_use_signal, webhook_rules
from tests.alerting.receiver import http_receiver
from tests.factories import usage_event

T0 = datetime(2026, 5, 4, 8, 0, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def pipeline(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", _env_file=None)
    settings.data_dir.mkdir(parents=True)
    clock = Clock(T0)
    keystore = KeyStore.open(settings.keystore_url, settings.hashing_secret(), clock=clock)
    pipe = EmbeddedPipeline(settings, keystore=keystore, alerting=False)
    pipe.clock = clock  # type: ignore[attr-defined]
    try:
        yield pipe
    finally:
        pipe.close()
        pipe.clickhouse.close()


def _engine(pipe, url, **rule_overrides):  # noqa: ANN001, ANN003
    engine = build_alert_engine(
        pipe.clickhouse,
        pipe.keystore,
        webhook_rules(url, **rule_overrides),
        sender=fast_sender(),
        clock=pipe.clock,
    )
    engine.start()
    return engine


def _inactive_key_detector_present() -> bool:
    return any("inactive" in getattr(d, "name", "") for d in default_detectors())


def test_revoked_key_used_gives_exactly_one_alert_with_ip_time_and_route(pipeline):
    if not _inactive_key_detector_present():
        names = [getattr(d, "name", type(d).__name__) for d in default_detectors()]
        pytest.skip(
            f"default_detectors() has no inactive-key detector yet (has {names}); "
            "test_revoked_key_signal_gives_one_alert_with_evidence covers the alerting side"
        )
    record, _secret = pipeline.keystore.create_key("billing", "proj_a")
    pipeline.clock.now = T0 + timedelta(days=1)
    pipeline.keystore.revoke(record.id, reason="leaked in a public repo")
    used_at = T0 + timedelta(days=1, hours=2)
    events = [
        usage_event(
            record.id,
            at=used_at,
            seconds=s,
            outcome=Outcome.REVOKED,
            status=401,
            client_ip="203.0.113.7",
            route="/v1/invoices/{invoice_id}",
        )
        for s in (0, 5, 30)
    ]
    with http_receiver() as receiver:
        engine = pipeline.alerts = _engine(pipeline, receiver.url)  # the pipeline's own wiring handles results
        pipeline.ingest(events)
        pipeline.ingest(events)  # redelivered batch
        engine.close()

    alerts = engine.store.list(key_id=record.id)
    assert len(alerts) == 1 and alerts[0].rule == INACTIVE_KEY_USE and alerts[0].status is AlertStatus.OPEN
    evidence = alerts[0].evidence
    assert evidence["ips"] == ["203.0.113.7"]
    assert any("/v1/invoices/{invoice_id}" in route for route in evidence["routes"])
    assert evidence["seen_at"] == ["2026-05-05T10:00:00.000Z"]
    assert len(receiver.delivery_ids()) == 1


def test_revoked_key_signal_gives_one_alert_with_evidence(pipeline):
    record, _secret = pipeline.keystore.create_key("billing", "proj_a")
    pipeline.keystore.revoke(record.id, reason="leaked")
    at = T0 + timedelta(hours=3)
    signal = revoked_use_signal(record.id, at=at, ip="203.0.113.7", route="GET /v1/invoices/{invoice_id}")
    with http_receiver() as receiver:
        engine = _engine(pipeline, receiver.url)
        engine.handle_signals([signal])
        engine.handle_signals([signal])
        engine.close()
    (alert,) = engine.store.list(key_id=record.id)
    assert alert.evidence["ips"] == ["203.0.113.7"]
    assert alert.evidence["routes"] == ["GET /v1/invoices/{invoice_id}"]
    assert alert.evidence["seen_at"] == ["2026-05-04T11:00:00.000Z"]
    assert len(receiver.requests) == 1


def test_idle_key_gets_one_idle_alert_that_resolves_when_the_key_is_used(pipeline):
    record, _secret = pipeline.keystore.create_key("reports", "proj_a")
    other, _ = pipeline.keystore.create_key("busy", "proj_a")
    pipeline.ingest([usage_event(record.id, at=T0 + timedelta(hours=1), client_ip="10.9.8.7")])
    assert pipeline.keystore.get(record.id).last_used_at == T0 + timedelta(hours=1)

    with http_receiver() as receiver:
        engine = _engine(pipeline, receiver.url, never_used_days=None)
        day_91 = T0 + timedelta(days=91, hours=2)
        first = engine.scan(day_91)
        again = engine.scan(day_91 + timedelta(hours=6))
        assert [(a.rule, a.key_id) for a in first.opened] == [("idle", record.id)]
        assert again.opened == [] and again.deliveries == []

        result = pipeline.ingest(
            [
                usage_event(record.id, at=day_91 + timedelta(hours=7), client_ip="10.9.8.7"),
                usage_event(other.id, at=day_91 + timedelta(hours=7)),
            ]
        )
        resolved = engine.handle_result(result, day_91 + timedelta(hours=7))
        after = engine.scan(day_91 + timedelta(hours=8))
        engine.close()

    assert [a.key_id for a in resolved.resolved] == [record.id]
    assert resolved.resolved[0].resolution == "condition cleared: key was used again"
    assert after.opened == []
    assert not [a for a in engine.store.active().values() if a.rule == "idle"]
    # the detectors may add a dormant-key-active alert for the same use; the idle one is notified once
    assert len([r for r in receiver.requests if b'"rule":"idle"' in r.body]) == 1


def test_quota_alerts_at_80_and_100_percent_from_clickhouse_usage(pipeline):
    record, _ = pipeline.keystore.create_key("metered", "proj_a", quota=10)
    day = T0 + timedelta(days=2)
    pipeline.ingest([usage_event(record.id, at=day, seconds=s) for s in range(8)])
    engine = build_alert_engine(
        pipeline.clickhouse,
        pipeline.keystore,
        webhook_rules("http://127.0.0.1:9/none", never_used_days=None),
        sender=fast_sender(max_attempts=1),
    )
    engine.dispatcher.channels = []
    assert [a.rule for a in engine.scan(day + timedelta(hours=1)).opened] == ["quota_80"]
    pipeline.ingest([usage_event(record.id, at=day + timedelta(minutes=5), seconds=s) for s in range(2)])
    assert [a.rule for a in engine.scan(day + timedelta(hours=2)).opened] == ["quota_100"]
    next_day = engine.scan(day + timedelta(days=1, hours=1))
    assert sorted(a.rule for a in next_day.resolved) == ["quota_100", "quota_80"]


def test_auto_disable_on_critical_signal_is_a_lifecycle_event_with_the_reason(pipeline):
    record, _ = pipeline.keystore.create_key("exposed", "proj_a")
    engine = build_alert_engine(
        pipeline.clickhouse,
        pipeline.keystore,
        webhook_rules("http://127.0.0.1:9/none", auto_disable_on_critical=True),
    )
    engine.dispatcher.channels = []
    engine.dispatcher.deliveries = InMemoryDeliveryLog()
    report = engine.handle_signals([revoked_use_signal(record.id)])
    assert report.disabled == [record.id]
    assert pipeline.keystore.get(record.id).status == "disabled"
    event = pipeline.keystore.lifecycle_events(record.id)[-1]
    assert event.action is LifecycleAction.DISABLED and event.actor == "keytrail-alerting"
    assert "critical use_of_inactive_key" in event.reason
