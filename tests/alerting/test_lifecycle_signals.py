"""Idle / never-used / expiring as signals: the watermark and the scanner open the same alert (issue 18)."""

from __future__ import annotations

from datetime import timedelta

from keytrail.stream_processors.alerting.engine import AlertEngine
from keytrail.stream_processors.alerting.rules import AlertRules
from keytrail.stream_processors.alerting.store import InMemoryAlertStore
from keytrail.stream_processors.alerting.usage import StaticUsage
from keytrail.stream_processors.core.clock import epoch_ms
from keytrail.stream_processors.detectors.key_lifecycle import (
    KeyFacts,
    LifecycleThresholds,
    lifecycle_signals,
)
from tests.alerting.builders import NOW, key_record

RULES = AlertRules()
THRESHOLDS = LifecycleThresholds(RULES.idle_days, RULES.never_used_days, RULES.expiring_within_days)


class Keys:
    def __init__(self, records):  # noqa: ANN001
        self.records = records

    def list_keys(self, filters=None):  # noqa: ANN001
        return self.records


def test_the_watermarks_idle_signal_and_the_scan_open_one_alert_not_two():
    record = key_record("idle", last_used_days_ago=91)
    (signal,) = lifecycle_signals(KeyFacts.of(record), epoch_ms(NOW), THRESHOLDS)
    engine = AlertEngine(InMemoryAlertStore(), RULES, keystore=Keys([record]), usage=StaticUsage(), clock=lambda: NOW)
    opened = engine.handle_signals([signal]).opened
    scanned = engine.scan(NOW + timedelta(hours=1))
    assert len(opened) == 1 and scanned.opened == []
    assert [s.signal_id for s in scanned.signals] == [signal.signal_id]
    assert len(engine.store.list()) == 1


def test_the_scan_reports_its_signals_with_the_event_time_windows():
    record = key_record("never", last_used_days_ago=None, created_days_ago=31)
    engine = AlertEngine(InMemoryAlertStore(), RULES, keystore=Keys([record]), usage=StaticUsage(), clock=lambda: NOW)
    (signal,) = engine.scan().signals
    assert signal.kind.value == "never_used" and signal.window_start == record.created_at
    assert signal.detected_at == record.created_at + timedelta(days=30)  # not the scan's wall time


def test_an_idle_period_the_key_already_ended_is_recorded_but_opens_no_alert():
    record = key_record("back", last_used_days_ago=120)
    (signal,) = lifecycle_signals(KeyFacts.of(record), epoch_ms(NOW), THRESHOLDS)
    engine = AlertEngine(InMemoryAlertStore(), RULES, clock=lambda: NOW)
    used_again = signal.detected_at + timedelta(days=3)
    report = engine.handle_batch([signal], [record.id], used_at={record.id: used_again})
    assert report.opened == []
    still = engine.handle_batch([signal], [], used_at={})  # no use after it: the key is idle now
    assert [a.rule for a in still.opened] == ["idle"]
