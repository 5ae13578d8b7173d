"""The pure engine: thresholds, one alert per key and rule, cooldown, lifecycle, auto-resolve, auto-actions."""

from __future__ import annotations

from datetime import timedelta

import pytest

from keytrail.schemas.keys import KeyStatus
from keytrail.schemas.signals import Severity, SignalKind
from keytrail.stream_processors.alerting.decide import (
    AlertStateConflict,
    acknowledge,
    auto_actions_for_signals,
    decide,
    findings_from_signals,
    resolve,
    scan_keys,
)
from keytrail.stream_processors.alerting.engine import AlertEngine
from keytrail.stream_processors.alerting.model import AlertStatus
from keytrail.stream_processors.alerting.rules import AlertRules, AlertRulesFileError, load_alert_rules
from keytrail.stream_processors.alerting.store import InMemoryAlertStore
from keytrail.stream_processors.alerting.usage import StaticUsage
from tests.alerting.builders import NOW, anomaly_signal, key_record, revoked_use_signal

RULES = AlertRules()


def test_defaults_are_the_documented_ones():
    assert (RULES.idle_days, RULES.never_used_days, RULES.expiring_within_days) == (90, 30, 7)
    assert RULES.quota_percents == [80, 100] and RULES.inactive_key_use
    assert not RULES.auto_disable_on_critical and RULES.auto_disable_idle_days is None


def test_rules_come_from_yaml_and_the_environment_wins(tmp_path, monkeypatch):
    path = tmp_path / "rules.yaml"
    path.write_text("idle_days: 45\nnever_used_days: 10\nanomaly_min_severity:\n  rate_spike: high\n")
    monkeypatch.setenv("KEYTRAIL_ALERT_NEVER_USED_DAYS", "12")
    rules = load_alert_rules(path)
    assert rules.idle_days == 45 and rules.never_used_days == 12
    assert rules.min_severity_for(SignalKind.RATE_SPIKE) is Severity.HIGH
    monkeypatch.setenv("KEYTRAIL_ALERT_RULES", str(path))
    assert load_alert_rules().idle_days == 45


def test_a_typo_in_the_rules_file_is_a_clear_error(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text("idel_days: 45\n")
    with pytest.raises(AlertRulesFileError, match="idel_days"):
        load_alert_rules(path)
    with pytest.raises(AlertRulesFileError, match="does not exist"):
        load_alert_rules(tmp_path / "missing.yaml")


def test_anomalies_below_their_kinds_threshold_open_nothing():
    rules = AlertRules(anomaly_min_severity={SignalKind.RATE_SPIKE: Severity.HIGH})
    low = anomaly_signal(SignalKind.RATE_SPIKE, Severity.MEDIUM)
    high = anomaly_signal(SignalKind.RATE_SPIKE, Severity.HIGH, key_id="key_b")
    other = anomaly_signal(SignalKind.NEW_NETWORK, Severity.MEDIUM, key_id="key_c")
    assert [f.key_id for f in findings_from_signals([low, high, other], rules)] == ["key_b", "key_c"]


def test_one_alert_per_key_and_rule_and_a_replayed_signal_changes_nothing():
    store = InMemoryAlertStore()
    engine = AlertEngine(store, RULES, clock=lambda: NOW)
    signal = revoked_use_signal()
    first = engine.handle_signals([signal, revoked_use_signal(at=NOW + timedelta(hours=1), ip="203.0.113.8")])
    replay = engine.handle_signals([signal])
    assert len(first.opened) == 1 and replay.changed == []
    (alert,) = store.list()
    assert alert.occurrences == 2 and alert.evidence["ips"] == ["203.0.113.7", "203.0.113.8"]
    assert alert.notify_round == 1


def test_open_alert_is_renotified_after_the_cooldown_but_not_once_acknowledged():
    rules = AlertRules(cooldown_hours=24)
    decision = decide({}, findings_from_signals([revoked_use_signal()], rules), [], NOW, rules)
    alert = decision.changed[0]
    active = {alert.dedupe_key: alert}
    soon = revoked_use_signal(at=NOW + timedelta(hours=2))
    assert (
        decide(
            active, findings_from_signals([soon], rules), [], NOW + timedelta(hours=2), rules
        ).notifications
        == []
    )
    later = revoked_use_signal(at=NOW + timedelta(hours=25))
    reminder = decide(active, findings_from_signals([later], rules), [], NOW + timedelta(hours=25), rules)
    assert [n.reason for n in reminder.notifications] == ["reminder"]
    assert reminder.changed[0].notify_round == 2
    acked = acknowledge(alert, "alice", NOW + timedelta(minutes=5))
    quiet = decide(
        {acked.dedupe_key: acked}, findings_from_signals([later], rules), [], NOW + timedelta(hours=25), rules
    )
    assert quiet.notifications == [] and quiet.changed[0].status is AlertStatus.ACKNOWLEDGED


def test_lifecycle_open_acknowledged_resolved_with_strictly_later_versions():
    alert = decide({}, findings_from_signals([revoked_use_signal()], RULES), [], NOW, RULES).changed[0]
    acked = acknowledge(alert, "alice", NOW)
    done = resolve(acked, "bob", NOW, "rotated the key")
    assert alert.updated_at < acked.updated_at < done.updated_at
    assert (done.status, done.acknowledged_by, done.resolved_by, done.resolution) == (
        AlertStatus.RESOLVED,
        "alice",
        "bob",
        "rotated the key",
    )
    with pytest.raises(AlertStateConflict):
        resolve(done, "bob", NOW)
    with pytest.raises(AlertStateConflict):
        acknowledge(done, "bob", NOW)


def test_scan_finds_idle_never_used_expiring_and_quota_keys():
    keys = [
        key_record("idle", last_used_days_ago=91),
        key_record("fresh", last_used_days_ago=89),
        key_record("never", last_used_days_ago=None, created_days_ago=31),
        key_record("young", last_used_days_ago=None, created_days_ago=29),
        key_record("expiring", expires_in_days=6),
        key_record("later", expires_in_days=8),
        key_record("busy", quota=100),
        key_record("full", quota=100),
        key_record("revoked", last_used_days_ago=300, status=KeyStatus.REVOKED),
    ]
    findings, _clears, disable = scan_keys(keys, {"busy": 80, "full": 100}, NOW, RULES)
    assert sorted((f.rule, f.key_id) for f in findings) == [
        ("expiring_soon", "expiring"),
        ("idle", "idle"),
        ("never_used", "never"),
        ("quota_100", "full"),
        ("quota_80", "busy"),
        ("quota_80", "full"),
    ]
    assert disable == []
    assert "91 days" in next(f for f in findings if f.rule == "idle").message


def test_scan_alerts_resolve_when_the_key_is_used_or_renewed():
    store = InMemoryAlertStore()
    keys = [key_record("idle", last_used_days_ago=91), key_record("expiring", expires_in_days=3)]

    class Keys:
        records = keys

        def list_keys(self, filters=None):  # noqa: ANN001
            return self.records

    directory = Keys()
    engine = AlertEngine(store, RULES, keystore=directory, usage=StaticUsage(), clock=lambda: NOW)
    assert len(engine.scan().opened) == 2
    assert engine.scan(NOW + timedelta(hours=1)).opened == []
    directory.records = [key_record("idle", last_used_days_ago=0), key_record("expiring", expires_in_days=33)]
    resolved = engine.scan(NOW + timedelta(hours=2)).resolved
    assert sorted(a.resolution for a in resolved) == [
        "condition cleared: key was renewed",
        "condition cleared: key was used again",
    ]
    assert store.active() == {}


def test_auto_actions_are_off_by_default_and_carry_a_reason_when_on():
    critical = revoked_use_signal()
    assert auto_actions_for_signals([critical], RULES) == []
    (action,) = auto_actions_for_signals([critical], AlertRules(auto_disable_on_critical=True))
    assert action.key_id == "key_a" and "critical use_of_inactive_key" in action.reason
    rules = AlertRules(auto_disable_idle_days=180)
    _f, _c, disable = scan_keys(
        [key_record("old", last_used_days_ago=181), key_record("recent")], {}, NOW, rules
    )
    assert [d.key_id for d in disable] == ["old"] and "idle beyond 180 days" in disable[0].reason


def test_the_documented_example_rules_file_loads():
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "docs" / "alert-rules.example.yaml"
    rules = load_alert_rules(path)
    assert [c.name for c in rules.all_channels()] == ["oncall", "security-slack"]
    assert rules.idle_days == 90 and not rules.auto_disable_on_critical


def test_decisions_are_deterministic_given_now():
    keys = [key_record("idle", last_used_days_ago=120), key_record("never", last_used_days_ago=None)]
    runs = [decide({}, *scan_keys(keys, {}, NOW, RULES)[:2], NOW, RULES).changed for _ in range(2)]
    assert runs[0] == runs[1] and len(runs[0]) == 2
