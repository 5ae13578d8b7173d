"""The alert engine around the pure decisions: reads state, decides, stores, notifies, acts.

One instance per process. Thread-safe (one lock around each cycle), so the embedded server can call
`handle_batch` from the ingest path while the scheduler calls `scan` from its thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from keytrail.schemas.keys import KeyRecord
from keytrail.schemas.signals import Signal
from keytrail.schemas.timestamps import to_utc_millis, utc_now
from keytrail.stream_processors.alerting import decide as pure
from keytrail.stream_processors.alerting.delivery import AlertDispatcher
from keytrail.stream_processors.alerting.model import SYSTEM_ACTOR, Alert, Clear, Decision, DisableKey
from keytrail.stream_processors.alerting.rules import IDLE, NEVER_USED, AlertRules
from keytrail.stream_processors.alerting.store import AlertStore, Delivery
from keytrail.stream_processors.alerting.usage import UsageSource

log = logging.getLogger(__name__)


class KeyDirectory(Protocol):
    """What the engine needs from the key store (keystore.store.KeyStore fits)."""

    def list_keys(self, filters: Any = None) -> list[KeyRecord]: ...

    def disable(self, key_id: str, *, actor: str = "system", reason: str = "") -> KeyRecord: ...


@dataclass(slots=True)
class CycleReport:
    """What one engine cycle did."""

    opened: list[Alert] = field(default_factory=list)
    changed: list[Alert] = field(default_factory=list)
    resolved: list[Alert] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    disabled: list[str] = field(default_factory=list)
    signals: list[Signal] = field(default_factory=list)
    """Idle / never-used / expiring signals a scan found (the live-mode driver of the evaluation
    the watermark runs in event time); the caller records them like the stream's signals."""


class AlertEngine:
    """Signals and scans in; alerts, notifications and (optional) auto-actions out."""

    def __init__(
        self,
        store: AlertStore,
        rules: AlertRules | None = None,
        *,
        dispatcher: AlertDispatcher | None = None,
        keystore: KeyDirectory | None = None,
        usage: UsageSource | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.store = store
        self.rules = rules or AlertRules()
        self.dispatcher = dispatcher
        self.keystore = keystore
        self.usage = usage
        self._clock = clock
        self._lock = threading.RLock()
        self._keys_with_alerts: set[str] | None = None
        """A superset of the keys with unresolved alerts (None = unknown), so an ingest batch that
        neither fires nor touches such a key costs no ClickHouse query."""

    # ----------------------------------------------------------------- inputs

    def start(self) -> list[Delivery]:
        """Call once at start: learn which keys have unresolved alerts, and resend deliveries a
        previous run recorded but did not confirm."""
        with self._lock:
            self._keys_with_alerts = {a.key_id for a in self.store.active().values()}
            if self.dispatcher is None:
                return []
            return self.dispatcher.resend_pending()

    def handle_signals(self, signals: Sequence[Signal], now: datetime | None = None) -> CycleReport:
        """Open or refresh alerts for signals at or above their rule's threshold."""
        return self.handle_batch(signals, (), now)

    def handle_batch(
        self, signals: Sequence[Signal], used_key_ids: Iterable[str] = (), now: datetime | None = None,
        used_at: dict[str, datetime] | None = None,
    ) -> CycleReport:
        """One ingest batch: its signals, plus the keys it saw used (their idle / never-used alerts resolve).

        `used_at` (key -> its newest use in the batch): an idle or never-used signal whose key was
        used after the signal's moment describes a silence that is over: recorded, not alerted.
        """
        now = to_utc_millis(now or self._clock())
        findings = pure.findings_from_signals(signals, self.rules)
        if used_at:
            findings = [f for f in findings
                        if f.rule not in (IDLE, NEVER_USED) or not (f.key_id in used_at and used_at[f.key_id] > f.observed_at)]
        used = set(used_key_ids)
        known = self._keys_with_alerts
        if known is not None:
            used &= known  # only keys with an unresolved alert can have one to resolve: no query otherwise
        clears = [Clear(rule, key_id, "key was used again") for key_id in used for rule in (IDLE, NEVER_USED)]
        disable = pure.auto_actions_for_signals(signals, self.rules)
        keys = {f.key_id for f in findings} | used
        return self._cycle(keys, findings, clears, disable, now)

    def handle_result(self, result, now: datetime | None = None) -> CycleReport:  # noqa: ANN001
        """An EmbeddedPipeline / core BatchResult: `.signals` and `.last_used`."""
        used_at = {r.key_id: r.last_used_at for r in result.last_used}
        return self.handle_batch(result.signals, list(used_at), now, used_at)

    def scan(self, now: datetime | None = None) -> CycleReport:
        """Idle, never-used, expiring and quota over every key in the key store (deterministic given `now`)."""
        if self.keystore is None:
            raise RuntimeError("AlertEngine.scan needs a keystore")
        now = to_utc_millis(now or self._clock())
        keys = self.keystore.list_keys()
        usage = self.usage.requests_on_day(now, [k.id for k in keys if k.quota]) if self.usage else {}
        signals = pure.scan_signals(keys, now, self.rules)
        findings, clears, disable = pure.scan_keys(keys, usage, now, self.rules, signals)
        report = self._cycle(None, findings, clears, disable, now)
        report.signals = [signal for found in signals.values() for signal in found]
        return report

    # ----------------------------------------------------------------- people

    def acknowledge(self, alert_id: str, actor: str, now: datetime | None = None) -> Alert:
        with self._lock:
            alert = self._get(alert_id)
            updated = pure.acknowledge(alert, actor, now or self._clock())
            self.store.save([updated])
            return updated

    def resolve(self, alert_id: str, actor: str, reason: str = "", now: datetime | None = None) -> Alert:
        with self._lock:
            alert = self._get(alert_id)
            updated = pure.resolve(alert, actor, now or self._clock(), reason)
            self.store.save([updated])
            return updated

    def _get(self, alert_id: str) -> Alert:
        alert = self.store.get(alert_id)
        if alert is None:
            raise pure.AlertNotFound(alert_id)
        return alert

    # ----------------------------------------------------------------- the cycle

    def _cycle(self, key_ids, findings, clears, disable: list[DisableKey], now: datetime) -> CycleReport:  # noqa: ANN001
        report = CycleReport()
        with self._lock:
            if not findings and not clears and not disable:
                return report
            active = self.store.active(key_ids)
            decision: Decision = pure.decide(active, findings, clears, now, self.rules)
            decision.disable.extend(disable)
            # outbox first: a crash after this line resends the same delivery ids on start
            pending = self.dispatcher.record(decision.notifications) if self.dispatcher else []
            self.store.save(decision.changed)
            for alert in decision.changed:
                if alert.status.value == "resolved":
                    report.resolved.append(alert)
                elif alert.dedupe_key not in active:
                    report.opened.append(alert)
            report.changed = decision.changed
            self._remember_active(key_ids, active, decision.changed)
            report.disabled = self._auto_disable(decision.disable)
            if self.dispatcher is not None and pending:
                report.deliveries = self.dispatcher.send(pending)
        return report

    def _remember_active(self, key_ids, before: dict[str, Alert], changed: Sequence[Alert]) -> None:  # noqa: ANN001
        after = dict(before)
        after.update((a.dedupe_key, a) for a in changed)
        now_active = {a.key_id for a in after.values() if a.active}
        if key_ids is None:
            self._keys_with_alerts = now_active
        elif self._keys_with_alerts is not None:
            self._keys_with_alerts = (self._keys_with_alerts - set(key_ids)) | now_active

    def _auto_disable(self, actions: Sequence[DisableKey]) -> list[str]:
        if not actions or self.keystore is None:
            return []
        from keytrail.keystore.errors import KeyNotFound, KeyStateConflict

        done = []
        for action in actions:
            try:
                self.keystore.disable(action.key_id, actor=SYSTEM_ACTOR, reason=action.reason)
            except (KeyStateConflict, KeyNotFound):
                continue  # not active any more, or gone: nothing to do
            log.warning("auto-disabled key %s: %s", action.key_id, action.reason)
            done.append(action.key_id)
        return done

    def close(self) -> None:
        if self.dispatcher is not None:
            self.dispatcher.close()
