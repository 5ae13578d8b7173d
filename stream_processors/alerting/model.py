"""Alerts, the conditions that open them, and the conditions that clear them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from keytrail.schemas.signals import Severity
from keytrail.schemas.timestamps import UtcMillis

ALERT_NAMESPACE = uuid.UUID("2b7d5f0e-3c8a-4a51-9d0e-6b1a7c4e9f21")
SYSTEM_ACTOR = "keytrail-alerting"
MAX_EVIDENCE_VALUES = 20
MAX_SIGNAL_IDS = 50


class AlertStatus(StrEnum):
    """open -> acknowledged -> resolved (open -> resolved directly too)."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


def dedupe_key_for(rule: str, key_id: str) -> str:
    """At most one unresolved alert per (rule, key)."""
    return f"{rule}:{key_id}"


def alert_id_for(dedupe_key: str, origin: str) -> str:
    """Deterministic: the same first observation (a replayed signal) gives the same alert id."""
    return "alt_" + uuid.uuid5(ALERT_NAMESPACE, f"{dedupe_key}|{origin}").hex[:20]


def delivery_id_for(alert_id: str, notify_round: int, channel: str) -> str:
    """One id per (alert, notification round, channel): sent as X-KeyTrail-Delivery, stable across retries and restarts."""
    return str(uuid.uuid5(ALERT_NAMESPACE, f"delivery|{alert_id}|{notify_round}|{channel}"))


class Alert(BaseModel):
    """One alert's current state; every change is a new version with a later `updated_at`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    alert_id: str
    dedupe_key: str
    key_id: str
    project_id: str
    rule: str
    severity: Severity
    status: AlertStatus = AlertStatus.OPEN
    opened_at: UtcMillis
    updated_at: UtcMillis
    resolved_at: UtcMillis | None = None
    last_notified_at: UtcMillis | None = None
    last_seen_at: UtcMillis | None = None
    occurrences: int = 1
    notify_round: int = 0
    acknowledged_at: UtcMillis | None = None
    acknowledged_by: str = ""
    resolved_by: str = ""
    resolution: str = ""
    signal_ids: list[str] = Field(default_factory=list)
    evidence: dict[str, list[str]] = Field(default_factory=dict)
    message: str = ""

    @property
    def active(self) -> bool:
        return self.status is not AlertStatus.RESOLVED

    def next_updated_at(self, now: datetime) -> datetime:
        """Strictly later than the stored version, so ReplacingMergeTree keeps the newest change."""
        return max(now, self.updated_at + timedelta(milliseconds=1))


@dataclass(frozen=True, slots=True)
class Finding:
    """A rule's condition holds for a key (from a signal or from a scan)."""

    rule: str
    key_id: str
    project_id: str
    severity: Severity
    message: str
    observed_at: datetime
    evidence: dict[str, list[str]] = field(default_factory=dict)
    signal_id: str | None = None
    origin: str = ""
    """What makes the first observation unique (the signal id, or the scan time); feeds the alert id."""

    @property
    def dedupe_key(self) -> str:
        return dedupe_key_for(self.rule, self.key_id)


@dataclass(frozen=True, slots=True)
class Clear:
    """A rule's condition no longer holds for a key; its open alert, if any, resolves."""

    rule: str
    key_id: str
    reason: str

    @property
    def dedupe_key(self) -> str:
        return dedupe_key_for(self.rule, self.key_id)


@dataclass(frozen=True, slots=True)
class Notification:
    """Tell the channels about `alert` (round `alert.notify_round`)."""

    alert: Alert
    reason: str
    """`opened`, `reminder` (cooldown passed), `escalated`."""


@dataclass(frozen=True, slots=True)
class DisableKey:
    """An auto-action: disable `key_id` with a reason that lands in the key's lifecycle log."""

    key_id: str
    reason: str


@dataclass(slots=True)
class Decision:
    """What the pure engine decided: alert versions to store, notifications to send, keys to disable."""

    changed: list[Alert] = field(default_factory=list)
    notifications: list[Notification] = field(default_factory=list)
    disable: list[DisableKey] = field(default_factory=list)

    def extend(self, other: Decision) -> None:
        self.changed.extend(other.changed)
        self.notifications.extend(other.notifications)
        self.disable.extend(other.disable)
