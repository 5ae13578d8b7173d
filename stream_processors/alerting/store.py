"""Where alert state and the delivery log live: a protocol each, one ClickHouse class (chDB or server)
and one in-memory class (tests, dry runs)."""

from __future__ import annotations

import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

import orjson

from keytrail.schemas.timestamps import format_utc_millis, to_utc_millis
from keytrail.sql.backends import ClickHouseBackend
from keytrail.stream_processors.alerting.model import Alert, AlertStatus

# ----------------------------------------------------------------------------- alerts


class AlertStore(Protocol):
    """Alert state, newest version per alert id."""

    def active(self, key_ids: Collection[str] | None = None) -> dict[str, Alert]:
        """Unresolved alerts by dedupe key (optionally only for these keys)."""

    def get(self, alert_id: str) -> Alert | None:
        """One alert's newest version."""

    def save(self, alerts: Sequence[Alert]) -> None:
        """Store new versions (each with a later updated_at than the one it replaces)."""

    def list(
        self,
        *,
        status: AlertStatus | None = None,
        key_id: str | None = None,
        project_id: str | None = None,
        limit: int = 200,
    ) -> list[Alert]:
        """Newest first."""


class InMemoryAlertStore:
    """Alert state in a dict; for tests and for running without ClickHouse."""

    def __init__(self) -> None:
        self._alerts: dict[str, Alert] = {}
        self._lock = threading.Lock()

    def active(self, key_ids: Collection[str] | None = None) -> dict[str, Alert]:
        with self._lock:
            return {
                a.dedupe_key: a
                for a in self._alerts.values()
                if a.active and (key_ids is None or a.key_id in key_ids)
            }

    def get(self, alert_id: str) -> Alert | None:
        return self._alerts.get(alert_id)

    def save(self, alerts: Sequence[Alert]) -> None:
        with self._lock:
            for alert in alerts:
                old = self._alerts.get(alert.alert_id)
                if old is None or alert.updated_at >= old.updated_at:
                    self._alerts[alert.alert_id] = alert

    def list(self, *, status=None, key_id=None, project_id=None, limit=200) -> list[Alert]:  # noqa: ANN001
        found = [
            a
            for a in self._alerts.values()
            if (status is None or a.status == status)
            and (key_id is None or a.key_id == key_id)
            and (project_id is None or a.project_id == project_id)
        ]
        return sorted(found, key=lambda a: a.updated_at, reverse=True)[:limit]


def _ch_time(value: datetime | None) -> str | None:
    return None if value is None else format_utc_millis(value)[:-1].replace("T", " ")


def _parse_time(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    text = str(value).replace(" ", "T")
    if not text.endswith("Z") and "+" not in text[10:]:
        text += "Z"
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _required_time(value: Any) -> datetime:
    parsed = _parse_time(value)
    if parsed is None:
        raise ValueError("missing timestamp in a stored row")
    return parsed


_ALERT_TIMES = (
    "opened_at",
    "updated_at",
    "resolved_at",
    "last_notified_at",
    "last_seen_at",
    "acknowledged_at",
)


def alert_row(alert: Alert) -> dict[str, Any]:
    """The `alerts` row of an alert version."""
    row = alert.model_dump(mode="python")
    for name in _ALERT_TIMES:
        row[name] = _ch_time(row[name])
    row["severity"] = alert.severity.value
    row["status"] = alert.status.value
    row["evidence"] = orjson.dumps(alert.evidence).decode()
    return row


def alert_from_row(row: dict[str, Any]) -> Alert:
    data = dict(row)
    for name in _ALERT_TIMES:
        data[name] = _parse_time(data.get(name))
    data["evidence"] = orjson.loads(data.get("evidence") or "{}")
    return Alert.model_validate(data)


_ALERT_COLUMNS = ", ".join(Alert.model_fields)


class ClickHouseAlertStore:
    """The `alerts` table (ReplacingMergeTree by updated_at), read with FINAL; chDB or a server."""

    def __init__(self, backend: ClickHouseBackend) -> None:
        self.backend = backend

    def active(self, key_ids: Collection[str] | None = None) -> dict[str, Alert]:
        sql = f"SELECT {_ALERT_COLUMNS} FROM alerts FINAL WHERE status != 'resolved'"
        params: dict[str, Any] = {}
        if key_ids is not None:
            if not key_ids:
                return {}
            sql += " AND has({key_ids:Array(String)}, key_id)"
            params["key_ids"] = sorted(key_ids)
        return {a.dedupe_key: a for a in map(alert_from_row, self.backend.query(sql, params))}

    def get(self, alert_id: str) -> Alert | None:
        rows = self.backend.query(
            f"SELECT {_ALERT_COLUMNS} FROM alerts FINAL WHERE alert_id = {{alert_id:String}}",
            {"alert_id": alert_id},
        )
        return alert_from_row(rows[0]) if rows else None

    def save(self, alerts: Sequence[Alert]) -> None:
        if alerts:
            self.backend.insert_json_rows("alerts", b"\n".join(orjson.dumps(alert_row(a)) for a in alerts))

    def list(self, *, status=None, key_id=None, project_id=None, limit=200) -> list[Alert]:  # noqa: ANN001
        where, params = ["1"], {"limit": limit}
        if status is not None:
            where.append("status = {status:String}")
            params["status"] = str(status)
        if key_id is not None:
            where.append("key_id = {key_id:String}")
            params["key_id"] = key_id
        if project_id is not None:
            where.append("project_id = {project_id:String}")
            params["project_id"] = project_id
        sql = (
            f"SELECT {_ALERT_COLUMNS} FROM alerts FINAL WHERE {' AND '.join(where)} "
            "ORDER BY updated_at DESC LIMIT {limit:UInt32}"
        )
        return [alert_from_row(row) for row in self.backend.query(sql, params)]


# ----------------------------------------------------------------------------- delivery log / outbox


class DeliveryState(StrEnum):
    """pending: recorded before sending (resent with the same id after a restart); sent; failed."""

    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Delivery:
    """One notification of one alert round to one channel, and how sending it went."""

    delivery_id: str
    alert_id: str
    channel: str
    round: int
    state: DeliveryState
    attempts: int
    last_error: str
    created_at: datetime
    updated_at: datetime
    payload: str

    def advanced(self, now: datetime, **changes: Any) -> Delivery:
        """A new version, strictly later than this one (ReplacingMergeTree keeps the newest)."""
        later = max(to_utc_millis(now), self.updated_at + timedelta(milliseconds=1))
        return replace(self, updated_at=later, **changes)


class DeliveryLog(Protocol):
    """The outbox and delivery log."""

    def get(self, delivery_id: str) -> Delivery | None: ...

    def save(self, delivery: Delivery) -> None: ...

    def pending(self) -> list[Delivery]: ...

    def list(self, alert_id: str | None = None) -> list[Delivery]: ...


class InMemoryDeliveryLog:
    def __init__(self) -> None:
        self._rows: dict[str, Delivery] = {}

    def get(self, delivery_id: str) -> Delivery | None:
        return self._rows.get(delivery_id)

    def save(self, delivery: Delivery) -> None:
        self._rows[delivery.delivery_id] = delivery

    def pending(self) -> list[Delivery]:
        return sorted(
            (d for d in self._rows.values() if d.state is DeliveryState.PENDING), key=lambda d: d.created_at
        )

    def list(self, alert_id: str | None = None) -> list[Delivery]:
        return sorted(
            (d for d in self._rows.values() if alert_id is None or d.alert_id == alert_id),
            key=lambda d: d.created_at,
        )


_DELIVERY_COLUMNS = (
    "delivery_id, alert_id, channel, round, state, attempts, last_error, created_at, updated_at, payload"
)


def _delivery_from_row(row: dict[str, Any]) -> Delivery:
    return Delivery(
        delivery_id=row["delivery_id"],
        alert_id=row["alert_id"],
        channel=row["channel"],
        round=int(row["round"]),
        state=DeliveryState(row["state"]),
        attempts=int(row["attempts"]),
        last_error=row["last_error"],
        created_at=_required_time(row["created_at"]),
        updated_at=_required_time(row["updated_at"]),
        payload=row["payload"],
    )


class ClickHouseDeliveryLog:
    """The `alert_deliveries` table (ReplacingMergeTree by updated_at), read with FINAL."""

    def __init__(self, backend: ClickHouseBackend) -> None:
        self.backend = backend

    def get(self, delivery_id: str) -> Delivery | None:
        rows = self.backend.query(
            f"SELECT {_DELIVERY_COLUMNS} FROM alert_deliveries FINAL WHERE delivery_id = {{id:String}}",
            {"id": delivery_id},
        )
        return _delivery_from_row(rows[0]) if rows else None

    def save(self, delivery: Delivery) -> None:
        row = {
            "delivery_id": delivery.delivery_id,
            "alert_id": delivery.alert_id,
            "channel": delivery.channel,
            "round": delivery.round,
            "state": delivery.state.value,
            "attempts": delivery.attempts,
            "last_error": delivery.last_error[:2000],
            "created_at": _ch_time(delivery.created_at),
            "updated_at": _ch_time(delivery.updated_at),
            "payload": delivery.payload,
        }
        self.backend.insert_json_rows("alert_deliveries", orjson.dumps(row))

    def pending(self) -> list[Delivery]:
        rows = self.backend.query(
            f"SELECT {_DELIVERY_COLUMNS} FROM alert_deliveries FINAL WHERE state = 'pending' ORDER BY created_at"
        )
        return [_delivery_from_row(row) for row in rows]

    def list(self, alert_id: str | None = None) -> list[Delivery]:
        sql = f"SELECT {_DELIVERY_COLUMNS} FROM alert_deliveries FINAL"
        params: dict[str, Any] = {}
        if alert_id is not None:
            sql += " WHERE alert_id = {alert_id:String}"
            params["alert_id"] = alert_id
        return [_delivery_from_row(row) for row in self.backend.query(sql + " ORDER BY created_at", params)]
