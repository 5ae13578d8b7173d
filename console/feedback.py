"""Mark a signal, or an alert, as expected: the one use case behind the CLI, the API and the dashboard.

A mark is stored in `detector_feedback` (read by the core at its next batch, which teaches the detector
that raised the signal, for that key only) and written to the key's audit trail (`marked_expected`).
It is scoped like everything else: a caller sees and marks its own project's signals only; another
project's signal is "not found", never "forbidden". Marking the same signal again changes nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from keytrail.keystore.caller import Caller
from keytrail.keystore.errors import KeyNotFound, PermissionDenied
from keytrail.keystore.store import KeyStore
from keytrail.schemas.lifecycle import KeyLifecycleEvent, LifecycleAction
from keytrail.schemas.secrets import redact_text
from keytrail.sql.backends import ClickHouseBackend
from keytrail.stream_processors.alerting.engine import AlertEngine
from keytrail.stream_processors.core.clock import epoch_ms
from keytrail.stream_processors.detectors import default_detectors
from keytrail.stream_processors.detectors.feedback import DetectorFeedback
from keytrail.stream_processors.detectors.teaching import FeedbackTeacher, MarkedExpected
from keytrail.stream_processors.feedback_store import FeedbackStore, StoredFeedback, _ms, feedback_id_for
from keytrail.stream_processors.sinks.lifecycle_audit import ClickHouseLifecycleSink

MAX_REASON_CHARS = 500
AUDIT_NAMESPACE = uuid.UUID("5b0e1f4c-8d2a-4c55-9a1e-3f7b2d6c9e40")


class FeedbackError(Exception):
    """A mark that cannot be made; `code` is stable (the API's error code), `status` its HTTP status."""

    code = "feedback_error"
    status = 400


class SignalNotFound(FeedbackError):
    code, status = "signal_not_found", 404

    def __init__(self, signal_id: str) -> None:
        super().__init__(
            f"no signal with id {signal_id[:64]!r} in the projects you can see "
            "(list them with `keytrail signals list`)"
        )


class AlertNotFound(FeedbackError):
    code, status = "alert_not_found", 404

    def __init__(self, alert_id: str) -> None:
        super().__init__(
            f"no alert with id {alert_id[:64]!r} in the projects you can see (list them with `keytrail alerts list`)"
        )


class NothingToTeach(FeedbackError):
    code, status = "nothing_to_teach", 409


@dataclass
class MarkOutcome:
    """What marking did: the stored marks (one per signal), which were new, who learns from them."""

    marks: list[StoredFeedback] = field(default_factory=list)
    created: list[bool] = field(default_factory=list)
    alert: dict[str, Any] | None = None

    def public(self) -> dict[str, Any]:
        teacher = FeedbackTeacher(default_detectors())
        rows = []
        for stored, created in zip(self.marks, self.created, strict=True):
            row = stored.public()
            detector = teacher.detector_for(stored.feedback.kind)
            row["learnt_by"] = detector.name if detector is not None else None
            row["already_marked"] = not created
            rows.append(row)
        body: dict[str, Any] = {"marks": rows}
        if self.alert is not None:
            body["alert"] = self.alert
        return body


def clean_reason(reason: str) -> str:
    """The reason as stored: secrets redacted, bounded."""
    return redact_text(reason or "")[:MAX_REASON_CHARS]


def mark_signal_expected(
    clickhouse: ClickHouseBackend,
    keystore: KeyStore,
    caller: Caller,
    signal_id: str,
    *,
    reason: str = "",
    alert_id: str = "",
    now: datetime | None = None,
) -> tuple[StoredFeedback, bool]:
    """Mark one signal expected; returns the stored mark and whether it is new (False: marked before)."""
    store = FeedbackStore(clickhouse)
    signal = store.signal(signal_id, caller.project_id)  # another project's signal: not found
    if signal is None:
        raise SignalNotFound(signal_id)
    if not caller.can_write:
        raise PermissionDenied(f"{caller.actor} has read-only access; marking a signal expected needs write access")
    feedback_id = feedback_id_for(signal["project_id"], signal["signal_id"])
    existing = store.get(feedback_id)
    if existing is not None:
        return existing, False
    reason = clean_reason(reason)
    marked_at = now or datetime.now(UTC)
    detected_ms = _ms(signal["detected_at"])
    mark = MarkedExpected(
        feedback_id,
        max(store.newest_event_ms(signal["key_id"]), detected_ms),
        DetectorFeedback(
            key_id=signal["key_id"],
            project_id=signal["project_id"],
            kind=signal["kind"],
            signal_id=signal["signal_id"],
            window_start_ms=_ms(signal["window_start"]),
            window_end_ms=_ms(signal["window_end"]),
            evidence={k: tuple(v) for k, v in orjson.loads(signal["evidence"] or "{}").items()},
            actor=caller.actor[:200],
            marked_at_ms=epoch_ms(marked_at),
        ),
    )
    _audit(clickhouse, keystore, caller, mark, reason)
    store.save(mark, alert_id, reason)
    stored = store.get(feedback_id)
    assert stored is not None
    return stored, True


def mark_alert_expected(
    clickhouse: ClickHouseBackend,
    keystore: KeyStore,
    alerts: AlertEngine,
    caller: Caller,
    alert_id: str,
    *,
    reason: str = "",
    now: datetime | None = None,
) -> MarkOutcome:
    """Mark every signal an alert was built on expected, then resolve the alert (if still active)."""
    alert = alerts.store.get(alert_id)
    if alert is None or not caller.sees(alert.project_id):
        raise AlertNotFound(alert_id)
    if not caller.can_write:
        raise PermissionDenied(f"{caller.actor} has read-only access; marking an alert expected needs write access")
    if not alert.signal_ids:
        raise NothingToTeach(
            f"alert {alert_id} ({alert.rule}) comes from a scan, not from a detector's signal: there is nothing to "
            "teach; resolve it with `keytrail alerts resolve` instead"
        )
    outcome = MarkOutcome()
    for signal_id in alert.signal_ids:
        try:
            stored, created = mark_signal_expected(
                clickhouse, keystore, caller, signal_id, reason=reason, alert_id=alert_id, now=now
            )
        except SignalNotFound:
            continue  # a signal dropped by retention: the others still teach
        outcome.marks.append(stored)
        outcome.created.append(created)
    if not outcome.marks:
        raise NothingToTeach(f"the signals of alert {alert_id} are no longer stored: there is nothing to teach")
    if alert.active:
        note = clean_reason(reason)
        alert = alerts.resolve(alert_id, caller.actor, f"marked expected{': ' + note if note else ''}", now=now)
    outcome.alert = alert.model_dump(mode="json")
    return outcome


def _audit(clickhouse: ClickHouseBackend, keystore: KeyStore, caller: Caller, mark: MarkedExpected,
           reason: str) -> None:
    """The `marked_expected` row of the key's audit trail: through the key store when it knows the key
    (its outbox publishes it), else straight into ClickHouse's audit table (keys seen only in events)."""
    feedback = mark.feedback
    text = f"signal {feedback.signal_id} ({feedback.kind}) marked expected" + (f": {reason}" if reason else "")
    try:
        keystore.note_marked_expected(feedback.key_id, caller=caller, reason=text[:1000])
        return
    except KeyNotFound:
        try:
            keystore.get(feedback.key_id, caller=Caller.system())
        except KeyNotFound:
            pass  # not a key of the store: audited in ClickHouse below
        else:
            raise SignalNotFound(feedback.signal_id) from None  # the key belongs to a project the caller cannot see
    ClickHouseLifecycleSink(clickhouse).publish(
        KeyLifecycleEvent(
            event_id=uuid.uuid5(AUDIT_NAMESPACE, mark.feedback_id),
            occurred_at=datetime.fromtimestamp(feedback.marked_at_ms / 1000, UTC),
            key_id=feedback.key_id,
            project_id=feedback.project_id,
            action=LifecycleAction.MARKED_EXPECTED,
            actor=caller.actor[:200],
            reason=text[:1000],
        )
    )
