"""The ClickHouse sink: the core's outputs as idempotent inserts, retried with backoff."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from schemas.last_used import LastUsed
from schemas.signals import Signal
from schemas.timestamps import format_utc_millis
from schemas.usage import KeyUsageEvent
from sql.backends import ClickHouseBackend, ClickHouseUnavailable
from stream_processors.core.aggregate import BatchResult, MinuteUsage

log = logging.getLogger(__name__)


def _ch_time(value: Any) -> str:
    """ClickHouse accepts `YYYY-MM-DD hh:mm:ss.sss` for DateTime64 in JSON input."""
    return format_utc_millis(value)[:-1].replace("T", " ")


def usage_event_row(event: KeyUsageEvent, on_time: bool) -> dict[str, Any]:
    """The `usage_events` row of an event (UUID and datetime serialised natively by orjson)."""
    return {
        "event_id": event.event_id,
        "occurred_at": event.occurred_at,
        "key_id": event.key_id,
        "project_id": event.project_id,
        "service": event.service,
        "method": event.method,
        "route": event.route,
        "status": event.status,
        "outcome": event.outcome,
        "latency_ms": event.latency_ms,
        "request_bytes": event.request_bytes,
        "response_bytes": event.response_bytes,
        "client_ip": event.client_ip,
        "user_agent": event.user_agent,
        "request_id": event.request_id,
        "on_time": 1 if on_time else 0,
    }


def minute_row(minute: MinuteUsage) -> dict[str, Any]:
    """The `key_usage_minute` row of a minute aggregate (full values, highest revision wins)."""
    row: dict[str, Any] = {
        "key_id": minute.key_id,
        "project_id": minute.project_id,
        "minute": minute.minute_start_s,
        "requests": minute.requests,
        "errors": minute.errors,
        "denials": minute.denials,
        "distinct_ips": minute.distinct_ips,
        "request_bytes": minute.request_bytes,
        "response_bytes": minute.response_bytes,
        "revision": minute.revision,
    }
    for outcome, count in minute.outcomes.items():
        row[f"outcome_{outcome}"] = count
    return row


def last_used_row(record: LastUsed) -> dict[str, Any]:
    """The `key_last_used` row of a LastUsed record."""
    return {
        "key_id": record.key_id,
        "project_id": record.project_id,
        "last_used_at": _ch_time(record.last_used_at),
        "last_used_ip": record.last_used_ip,
        "route": record.route,
        "service": record.service,
        "event_id": record.event_id,
    }


def signal_row(signal: Signal) -> dict[str, Any]:
    """The `signals` row of a Signal."""
    data = signal.model_dump(mode="json")
    for name in ("window_start", "window_end", "detected_at"):
        data[name] = _ch_time(getattr(signal, name))
    data["evidence"] = orjson.dumps(signal.evidence).decode()
    return data


def _json_lines(rows: Iterable[dict[str, Any]]) -> bytes:
    return b"\n".join(orjson.dumps(row) for row in rows)


class ClickHouseSink:
    """Writes raw events, minute aggregates, last used and signals; blocks and retries while ClickHouse is down.

    Blocking is the backpressure: the caller (the Faust agent or the embedded runner) stops
    consuming until the batch is durable, so nothing is dropped.
    """

    def __init__(
        self,
        backend: ClickHouseBackend,
        *,
        max_backoff_s: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
        give_up_after_s: float | None = None,
    ) -> None:
        self.backend = backend
        self.max_backoff_s = max_backoff_s
        self.give_up_after_s = give_up_after_s
        self._sleep = sleep
        self._lock = threading.Lock()
        self.retries = 0
        self.rows_written = 0

    def write_batch(self, result: BatchResult) -> None:
        tables: list[tuple[str, bytes]] = []
        if result.accepted or result.late:
            rows = [usage_event_row(e, True) for e in result.accepted]
            rows += [usage_event_row(e, False) for e in result.late]
            tables.append(("usage_events", _json_lines(rows)))
        if result.minutes:
            tables.append(("key_usage_minute", _json_lines(minute_row(m) for m in result.minutes)))
        if result.last_used:
            tables.append(("key_last_used", _json_lines(last_used_row(r) for r in result.last_used)))
        if result.signals:
            tables.append(("signals", _json_lines(signal_row(s) for s in result.signals)))
        with self._lock:
            for table, payload in tables:
                self._insert_with_retry(table, payload)
                self.rows_written += payload.count(b"\n") + 1

    def _insert_with_retry(self, table: str, payload: bytes) -> None:
        delay = 0.1
        started = time.monotonic()
        while True:
            try:
                self.backend.insert_json_rows(table, payload)
                return
            except ClickHouseUnavailable as exc:
                self.retries += 1
                waited = time.monotonic() - started
                if self.give_up_after_s is not None and waited > self.give_up_after_s:
                    raise
                log.warning("ClickHouse insert into %s failed (%s); retrying in %.1f s", table, exc, delay)
                self._sleep(delay)
                delay = min(delay * 2, self.max_backoff_s)

    def flush(self) -> None:
        """Inserts are synchronous; nothing is buffered."""

    def close(self) -> None:
        self.backend.close()
