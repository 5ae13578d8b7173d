"""The pure alert engine: (active alerts, findings, clears, now, rules) -> Decision. No I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta

from keytrail.schemas.keys import KeyRecord, KeyStatus
from keytrail.schemas.signals import Severity, Signal, SignalKind
from keytrail.schemas.timestamps import format_utc_millis, to_utc_millis
from keytrail.stream_processors.alerting.model import (
    MAX_EVIDENCE_VALUES,
    MAX_SIGNAL_IDS,
    SYSTEM_ACTOR,
    Alert,
    AlertStatus,
    Clear,
    Decision,
    DisableKey,
    Finding,
    Notification,
    alert_id_for,
)
from keytrail.stream_processors.alerting.rules import (
    ANOMALY_KINDS,
    EXPIRING_SOON,
    IDLE,
    INACTIVE_KEY_USE,
    NEVER_USED,
    AlertRules,
    quota_rule,
)
from keytrail.stream_processors.core.clock import epoch_ms
from keytrail.stream_processors.detectors.key_lifecycle import (
    KeyFacts,
    LifecycleThresholds,
    lifecycle_signals,
)

# ----------------------------------------------------------------------------- signals -> findings


def findings_from_signals(signals: Iterable[Signal], rules: AlertRules) -> list[Finding]:
    """The signals that open (or refresh) an alert under `rules`; the rest are below threshold."""
    found: list[Finding] = []
    for signal in signals:
        rule = _rule_for_signal(signal, rules)
        if rule is None:
            continue
        rule_name, severity = rule
        evidence = {name: list(values) for name, values in signal.evidence.items()}
        evidence["seen_at"] = [format_utc_millis(signal.detected_at)]
        evidence["window"] = [
            f"{format_utc_millis(signal.window_start)}/{format_utc_millis(signal.window_end)}"
        ]
        found.append(
            Finding(
                rule=rule_name,
                key_id=signal.key_id,
                project_id=signal.project_id,
                severity=severity,
                message=signal.message,
                observed_at=signal.detected_at,
                evidence=evidence,
                signal_id=signal.signal_id,
                origin=signal.signal_id,
            )
        )
    return found


def _rule_for_signal(signal: Signal, rules: AlertRules) -> tuple[str, Severity] | None:
    kind = signal.kind
    if kind is SignalKind.USE_OF_INACTIVE_KEY:
        if not rules.inactive_key_use:
            return None
        return INACTIVE_KEY_USE, max(signal.severity, rules.inactive_key_severity, key=lambda s: s.rank)
    if kind is SignalKind.IDLE:
        return (IDLE, signal.severity) if rules.idle_days is not None else None
    if kind is SignalKind.NEVER_USED:
        return (NEVER_USED, signal.severity) if rules.never_used_days is not None else None
    if kind is SignalKind.EXPIRING_SOON:
        return (EXPIRING_SOON, signal.severity) if rules.expiring_within_days is not None else None
    if kind is SignalKind.QUOTA:
        if not rules.quota_percents or signal.expected <= 0:
            return None
        percent = 100.0 * signal.observed / signal.expected
        reached = [p for p in rules.quota_percents if percent >= p]
        return (quota_rule(reached[-1]), signal.severity) if reached else None
    if kind in ANOMALY_KINDS or kind not in _NON_ANOMALY:
        if signal.severity.rank >= rules.min_severity_for(kind).rank:
            return kind.value, signal.severity
    return None


_NON_ANOMALY = {
    SignalKind.USE_OF_INACTIVE_KEY,
    SignalKind.IDLE,
    SignalKind.NEVER_USED,
    SignalKind.EXPIRING_SOON,
    SignalKind.QUOTA,
}


def auto_actions_for_signals(signals: Iterable[Signal], rules: AlertRules) -> list[DisableKey]:
    """Disable keys on critical signals, when switched on."""
    if not rules.auto_disable_on_critical:
        return []
    seen: dict[str, DisableKey] = {}
    for signal in signals:
        if signal.severity is Severity.CRITICAL and signal.key_id not in seen:
            seen[signal.key_id] = DisableKey(
                signal.key_id,
                f"auto-disabled by KeyTrail alerting: critical {signal.kind.value} signal {signal.signal_id}: "
                f"{signal.message}"[:500],
            )
    return list(seen.values())


# ----------------------------------------------------------------------------- scan -> findings, clears


def lifecycle_thresholds(rules: AlertRules) -> LifecycleThresholds:
    """The idle / never-used / expiring thresholds of the rules, for the evaluation both drivers share."""
    return LifecycleThresholds(rules.idle_days, rules.never_used_days, rules.expiring_within_days)


def scan_signals(keys: Iterable[KeyRecord], now: datetime, rules: AlertRules) -> dict[str, list[Signal]]:
    """The live-mode driver of the lifecycle evaluation: every key's idle / never-used / expiring
    signals at wall time `now` (the same signals the watermark raises in event time)."""
    at_ms = epoch_ms(to_utc_millis(now))
    thresholds = lifecycle_thresholds(rules)
    return {key.id: lifecycle_signals(KeyFacts.of(key), at_ms, thresholds) for key in keys}


def scan_keys(
    keys: Iterable[KeyRecord], requests_today: Mapping[str, int], now: datetime, rules: AlertRules,
    signals: dict[str, list[Signal]] | None = None,
) -> tuple[list[Finding], list[Clear], list[DisableKey]]:
    """Idle, never-used, expiring and quota conditions of every key at `now` (deterministic).

    Idle, never used and expiring come from `scan_signals` (pass them in to keep them); each
    finding carries its signal's id, so the alert it opens is the one the watermark would open.
    """
    now = to_utc_millis(now)
    keys = list(keys)
    if signals is None:
        signals = scan_signals(keys, now, rules)
    findings: list[Finding] = []
    clears: list[Clear] = []
    disable: list[DisableKey] = []
    origin = format_utc_millis(now)
    for key in keys:
        active = key.status is KeyStatus.ACTIVE
        held = {signal.kind: signal for signal in signals.get(key.id, ())}
        _idle(key, now, rules, active, held.get(SignalKind.IDLE), findings, clears)
        _never_used(key, now, rules, active, held.get(SignalKind.NEVER_USED), findings, clears)
        _expiring(key, now, rules, active, held.get(SignalKind.EXPIRING_SOON), findings, clears)
        _quota(key, requests_today.get(key.id, 0), now, rules, active, origin, findings, clears)
        if active and rules.auto_disable_idle_days is not None:
            since = key.last_used_at or key.created_at
            if now - since > timedelta(days=rules.auto_disable_idle_days):
                what = "last used" if key.last_used_at else "created and never used"
                disable.append(
                    DisableKey(
                        key.id,
                        f"auto-disabled by KeyTrail alerting: idle beyond {rules.auto_disable_idle_days} days "
                        f"({what} {format_utc_millis(since)})",
                    )
                )
    return findings, clears, disable


def _days(delta: timedelta) -> int:
    return int(delta.total_seconds() // 86400)


def _idle(key, now, rules, active, signal, findings, clears) -> None:  # noqa: ANN001
    if rules.idle_days is None:
        return
    if signal is not None:
        idle_for = _days(now - key.last_used_at)
        findings.append(
            Finding(
                IDLE,
                key.id,
                key.project_id,
                Severity.LOW,
                f"Key {key.id} ({key.name}) has not been used for {idle_for} days (last used "
                f"{format_utc_millis(key.last_used_at)} from {key.last_used_ip or 'unknown IP'}); the threshold is "
                f"{rules.idle_days} days. An unused key is attack surface: revoke it if nobody needs it.",
                now,
                {
                    "last_used_at": [format_utc_millis(key.last_used_at)],
                    "ips": [key.last_used_ip] if key.last_used_ip else [],
                    "idle_days": [str(idle_for)],
                },
                origin=signal.signal_id,  # the alert the watermark opens for this signal (a re-scan still refreshes it)
            )
        )
    else:
        reason = "key was used again" if active else f"key is {key.status}"
        clears.append(Clear(IDLE, key.id, reason))


def _never_used(key, now, rules, active, signal, findings, clears) -> None:  # noqa: ANN001
    if rules.never_used_days is None:
        return
    if signal is not None:
        age = _days(now - key.created_at)
        findings.append(
            Finding(
                NEVER_USED,
                key.id,
                key.project_id,
                Severity.LOW,
                f"Key {key.id} ({key.name}) was created {age} days ago ({format_utc_millis(key.created_at)}) and has "
                f"never been used; the threshold is {rules.never_used_days} days. Revoke it if it is not needed.",
                now,
                {"created_at": [format_utc_millis(key.created_at)], "age_days": [str(age)]},
                origin=signal.signal_id,  # the alert the watermark opens for this signal (a re-scan still refreshes it)
            )
        )
    else:
        reason = "key was used" if key.last_used_at is not None else f"key is {key.status}"
        clears.append(Clear(NEVER_USED, key.id, reason))


def _expiring(key, now, rules, active, signal, findings, clears) -> None:  # noqa: ANN001
    if rules.expiring_within_days is None:
        return
    limit = now + timedelta(days=rules.expiring_within_days)
    if signal is not None:
        left = key.expires_at - now
        findings.append(
            Finding(
                EXPIRING_SOON,
                key.id,
                key.project_id,
                Severity.MEDIUM,
                f"Key {key.id} ({key.name}) expires at {format_utc_millis(key.expires_at)} (in {_days(left)} days "
                f"{int(left.total_seconds() // 3600) % 24} hours). Renew it (`keytrail keys renew {key.id}`) or "
                "rotate callers to a new key before then.",
                now,
                {"expires_at": [format_utc_millis(key.expires_at)]},
                origin=signal.signal_id,  # the alert the watermark opens for this signal (a re-scan still refreshes it)
            )
        )
    else:
        if key.expires_at is None or key.expires_at > limit:
            reason = "key was renewed" if key.expires_at is not None else "key no longer expires"
        else:
            reason = f"key is {key.status}" if not active else "key has expired"
        clears.append(Clear(EXPIRING_SOON, key.id, reason))


def _quota(key, used, now, rules, active, origin, findings, clears) -> None:  # noqa: ANN001
    if not rules.quota_percents:
        return
    quota = key.quota
    for percent in rules.quota_percents:
        rule = quota_rule(percent)
        if active and quota and used * 100 >= quota * percent:
            severity = Severity.HIGH if percent >= 100 else Severity.MEDIUM
            findings.append(
                Finding(
                    rule,
                    key.id,
                    key.project_id,
                    severity,
                    f"Key {key.id} ({key.name}) made {used} requests today (UTC), {100 * used / quota:.0f} % of its "
                    f"quota of {quota} per day (threshold {percent} %).",
                    now,
                    {"requests_today": [str(used)], "quota": [str(quota)], "day": [now.date().isoformat()]},
                    origin=f"{now.date().isoformat()}|{percent}",
                )
            )
        else:
            reason = "daily usage is below the threshold" if quota else "key has no quota"
            clears.append(Clear(rule, key.id, reason))


# ----------------------------------------------------------------------------- the engine


def decide(
    active: Mapping[str, Alert],
    findings: Sequence[Finding],
    clears: Sequence[Clear],
    now: datetime,
    rules: AlertRules,
) -> Decision:
    """Open, refresh, re-notify and resolve alerts. `active` maps dedupe key -> unresolved alert.

    A finding whose signal was already folded into the alert (a replay) changes nothing.
    """
    now = to_utc_millis(now)
    cooldown = timedelta(hours=rules.cooldown_hours)
    current: dict[str, Alert] = dict(active)
    changed: dict[str, Alert] = {}
    notify: dict[str, Notification] = {}
    found: set[str] = set()
    for finding in findings:
        key = finding.dedupe_key
        found.add(key)
        alert = current.get(key)
        if alert is None:
            alert = _open(finding, now)
            notify[key] = Notification(alert, "opened")
        else:
            if finding.signal_id is not None and finding.signal_id in alert.signal_ids:
                continue
            alert, reason = _refresh(alert, finding, now, cooldown)
            if reason is not None:
                notify[key] = Notification(alert, reason)
            elif key in notify:
                notify[key] = Notification(alert, notify[key].reason)
        current[key] = changed[key] = alert
    for clear in clears:
        key = clear.dedupe_key
        alert = current.get(key)
        if alert is None or not alert.active or key in found:
            continue
        alert = resolve(alert, SYSTEM_ACTOR, now, f"condition cleared: {clear.reason}")
        current[key] = changed[key] = alert
        notify.pop(key, None)
    return Decision(changed=list(changed.values()), notifications=list(notify.values()))


def _open(finding: Finding, now: datetime) -> Alert:
    return Alert(
        alert_id=alert_id_for(finding.dedupe_key, finding.origin or format_utc_millis(finding.observed_at)),
        dedupe_key=finding.dedupe_key,
        key_id=finding.key_id,
        project_id=finding.project_id,
        rule=finding.rule,
        severity=finding.severity,
        opened_at=now,
        updated_at=now,
        last_notified_at=now,
        last_seen_at=finding.observed_at,
        notify_round=1,
        signal_ids=[finding.signal_id] if finding.signal_id else [],
        evidence=_bounded(finding.evidence),
        message=finding.message,
    )


def _refresh(alert: Alert, finding: Finding, now: datetime, cooldown: timedelta) -> tuple[Alert, str | None]:
    escalated = finding.severity.rank > alert.severity.rank
    update: dict[str, object] = {
        "updated_at": alert.next_updated_at(now),
        "last_seen_at": max(finding.observed_at, alert.last_seen_at or finding.observed_at),
        "occurrences": alert.occurrences + 1,
        "severity": finding.severity if escalated else alert.severity,
        "evidence": _merged(alert.evidence, finding.evidence),
        "message": finding.message,
    }
    if finding.signal_id:
        update["signal_ids"] = (alert.signal_ids + [finding.signal_id])[-MAX_SIGNAL_IDS:]
    reason = None
    if alert.status is AlertStatus.OPEN:
        due = alert.last_notified_at is None or now - alert.last_notified_at >= cooldown
        if escalated or due:
            reason = "escalated" if escalated else "reminder"
    elif alert.status is AlertStatus.ACKNOWLEDGED and escalated:
        reason = "escalated"
        update["status"] = AlertStatus.OPEN
    if reason is not None:
        update["notify_round"] = alert.notify_round + 1
        update["last_notified_at"] = now
    return alert.model_copy(update=update), reason


def _bounded(evidence: Mapping[str, list[str]]) -> dict[str, list[str]]:
    return {name: list(values)[:MAX_EVIDENCE_VALUES] for name, values in evidence.items()}


def _merged(old: Mapping[str, list[str]], new: Mapping[str, list[str]]) -> dict[str, list[str]]:
    merged = {name: list(values) for name, values in old.items()}
    for name, values in new.items():
        bucket = merged.setdefault(name, [])
        for value in values:
            if value not in bucket:
                bucket.append(value)
        merged[name] = bucket[-MAX_EVIDENCE_VALUES:]
    return merged


def acknowledge(alert: Alert, actor: str, now: datetime) -> Alert:
    """Someone is on it: no more reminders (an escalation reopens it)."""
    if alert.status is not AlertStatus.OPEN:
        raise AlertStateConflict(
            f"alert {alert.alert_id} is {alert.status}; only open alerts can be acknowledged"
        )
    now = to_utc_millis(now)
    return alert.model_copy(
        update={
            "status": AlertStatus.ACKNOWLEDGED,
            "acknowledged_at": now,
            "acknowledged_by": actor,
            "updated_at": alert.next_updated_at(now),
        }
    )


def resolve(alert: Alert, actor: str, now: datetime, reason: str = "") -> Alert:
    """Done: by a person, or by the engine when the condition cleared."""
    if alert.status is AlertStatus.RESOLVED:
        raise AlertStateConflict(f"alert {alert.alert_id} is already resolved")
    now = to_utc_millis(now)
    return alert.model_copy(
        update={
            "status": AlertStatus.RESOLVED,
            "resolved_at": now,
            "resolved_by": actor,
            "resolution": reason or f"resolved by {actor}",
            "updated_at": alert.next_updated_at(now),
        }
    )


class AlertStateConflict(ValueError):
    """The alert is not in a state that allows the change (e.g. acknowledging a resolved alert)."""


class AlertNotFound(LookupError):
    """No alert has this id."""

    def __init__(self, alert_id: str) -> None:
        super().__init__(f"no alert with id {alert_id!r} (list them with `keytrail alerts list`)")
        self.alert_id = alert_id
