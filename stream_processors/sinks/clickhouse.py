"""The ClickHouse sink: the core's outputs as idempotent inserts, retried with backoff."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from operator import attrgetter, itemgetter
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from keytrail.schemas.last_used import LastUsed
from keytrail.schemas.signals import Signal
from keytrail.schemas.timestamps import format_utc_millis
from keytrail.schemas.usage import KeyUsageEvent
from keytrail.sql.backends import ClickHouseBackend, ClickHouseUnavailable
from keytrail.stream_processors.core.aggregate import BatchResult, MinuteRows, MinuteUsage
from keytrail.stream_processors.core.columns import RAW_FIELDS
from keytrail.stream_processors.core.state import OUTCOME_ORDER

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


# Arrow blocks: the same rows as above, built column by column (no dict, no JSON text per row).
# ClickHouse converts them on insert to exactly the values it parses from the JSON rows.

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)
_UTC_MS = pa.timestamp("ms", tz="UTC")
_STRING = pa.string()
_UINT64 = pa.uint64()
_OUTCOMES = ("ok", "denied", "invalid", "expired", "revoked", "disabled", "rate_limited", "error")
"""The `outcome_*` columns of key_usage_minute, in table order."""

_EVENT_COLUMNS = RAW_FIELDS
"""The `usage_events` columns an event fills, in table order (`on_time` is the sink's own)."""
_event_getters = tuple(attrgetter(name) for name in _EVENT_COLUMNS)
_event_items = tuple(itemgetter(name) for name in _EVENT_COLUMNS)
_instance_dict = attrgetter("__dict__")


def _event_columns(events: Sequence[KeyUsageEvent]) -> list[list[Any]]:
    """The values of each column of `events` (KeyUsageEvent or its msgspec mirror FastUsageEvent).

    A pydantic model keeps its fields in its `__dict__`, and reading them there is about twice
    as fast as through attribute access; a msgspec struct has no `__dict__` and is read by attribute.
    """
    try:
        fields = list(map(_instance_dict, events))
        return [list(map(get, fields)) for get in _event_items]
    except (AttributeError, KeyError, TypeError):
        return [list(map(get, events)) for get in _event_getters]


_minute_fields = attrgetter(
    "key_id",
    "project_id",
    "minute_start_s",
    "requests",
    "errors",
    "denials",
    "outcomes",
    "distinct_ips",
    "request_bytes",
    "response_bytes",
    "revision",
)
_last_used_fields = attrgetter(
    "key_id", "project_id", "last_used_at", "last_used_ip", "route", "service", "event_id"
)


def _epoch_millis(values: Sequence[datetime]) -> pa.Array:
    """UTC milliseconds, truncated like the JSON text (pyarrow's own tz-aware conversion is ~20x slower)."""
    epoch, ms = _EPOCH, _MILLISECOND
    return pa.array([(value - epoch) // ms for value in values], _UTC_MS)


def usage_events_table(accepted: Sequence[KeyUsageEvent], late: Sequence[KeyUsageEvent]) -> pa.Table:
    """The `usage_events` rows of on-time and late events as one Arrow block."""
    events = [*accepted, *late]
    (
        event_id,
        occurred_at,
        key_id,
        project_id,
        service,
        method,
        route,
        status,
        outcome,
        latency_ms,
        request_bytes,
        response_bytes,
        client_ip,
        user_agent,
        request_id,
    ) = _event_columns(events)
    return pa.table(
        {
            "event_id": pa.array([value.bytes for value in event_id], pa.binary(16)),
            "occurred_at": _epoch_millis(occurred_at),
            "key_id": pa.array(key_id, _STRING),
            "project_id": pa.array(project_id, _STRING),
            "service": pa.array(service, _STRING),
            "method": pa.array(method, _STRING),
            "route": pa.array(route, _STRING),
            "status": pa.array(status, pa.uint16()),
            "outcome": pa.array(outcome, _STRING),
            "latency_ms": pa.array(latency_ms, pa.float64()),
            "request_bytes": pa.array(request_bytes, _UINT64),
            "response_bytes": pa.array(response_bytes, _UINT64),
            "client_ip": pa.array(client_ip, _STRING),
            "user_agent": pa.array(user_agent, _STRING),
            "request_id": pa.array(request_id, _STRING),
            "on_time": pa.array([1] * len(accepted) + [0] * len(late), pa.uint8()),
        }
    )


def usage_events_table_of(result: BatchResult) -> pa.Table:
    """`usage_events` rows of a batch from its columns: one Arrow block, no event object touched.

    The batch's columns become Arrow arrays once (strings in C, times from the core's epoch
    milliseconds) and the accepted and late rows are taken out of them by index.
    """
    columns = result.columns
    assert columns is not None
    raw = columns.raw
    rows = np.concatenate([result.accepted_index, result.late_index])
    on_time = np.zeros(len(rows), np.uint8)
    on_time[: len(result.accepted_index)] = 1
    table = pa.table(
        {
            "event_id": pa.array([value.bytes for value in raw["event_id"]], pa.binary(16)),
            "occurred_at": pa.array(columns.t_ms, pa.int64()).cast(_UTC_MS),
            "key_id": pa.array(columns.key_id, _STRING),
            "project_id": pa.array(columns.project_id, _STRING),
            "service": pa.array(raw["service"], _STRING),
            "method": pa.array(raw["method"], _STRING),
            "route": pa.array(raw["route"], _STRING),
            "status": pa.array(raw["status"], pa.uint16()),
            "outcome": pa.array(raw["outcome"], _STRING),
            "latency_ms": pa.array(raw["latency_ms"], pa.float64()),
            "request_bytes": pa.array(columns.request_bytes, pa.int64()).cast(_UINT64),
            "response_bytes": pa.array(columns.response_bytes, pa.int64()).cast(_UINT64),
            "client_ip": pa.array(columns.client_ip, _STRING),
            "user_agent": pa.array(raw["user_agent"], _STRING),
            "request_id": pa.array(raw["request_id"], _STRING),
        }
    )
    if len(rows) != table.num_rows or not (rows[:-1] < rows[1:]).all():
        table = table.take(pa.array(rows))
    return table.append_column("on_time", pa.array(on_time, pa.uint8()))


def minute_rows_table(rows: MinuteRows) -> pa.Table:
    """`key_usage_minute` rows straight from the core's minute columns (one Arrow block)."""
    if tuple(o.value for o in OUTCOME_ORDER) != _OUTCOMES:
        raise ValueError("key_usage_minute's outcome columns no longer match the contract's outcomes")
    requests = pa.array(rows.requests, pa.int64()).cast(_UINT64)
    columns: dict[str, pa.Array] = {
        "key_id": pa.array(rows.key_id, _STRING),
        "project_id": pa.array(rows.project_id, _STRING),
        "minute": pa.array(rows.minute_start_s, pa.int64()).cast(pa.uint32()),
        "requests": requests,
        "errors": pa.array(rows.errors, pa.int64()).cast(_UINT64),
        "denials": pa.array(rows.denials, pa.int64()).cast(_UINT64),
    }
    for index, name in enumerate(_OUTCOMES):
        columns[f"outcome_{name}"] = pa.array(np.ascontiguousarray(rows.outcomes[:, index]), pa.int64()).cast(_UINT64)
    columns["distinct_ips"] = pa.array(rows.distinct_ips, pa.int64()).cast(pa.uint32())
    columns["request_bytes"] = pa.array(rows.request_bytes, pa.int64()).cast(_UINT64)
    columns["response_bytes"] = pa.array(rows.response_bytes, pa.int64()).cast(_UINT64)
    columns["revision"] = requests
    return pa.table(columns)


def minutes_table(minutes: Sequence[MinuteUsage]) -> pa.Table:
    """The `key_usage_minute` rows of minute aggregates as one Arrow block."""
    (
        key_id,
        project_id,
        minute,
        requests,
        errors,
        denials,
        outcomes,
        distinct_ips,
        request_bytes,
        response_bytes,
        revision,
    ) = zip(*map(_minute_fields, minutes), strict=True)
    unknown = {str(name) for counts in outcomes for name in counts}.difference(_OUTCOMES)
    if unknown:
        raise ValueError(f"key_usage_minute has no column for outcomes {sorted(unknown)}")
    columns: dict[str, pa.Array] = {
        "key_id": pa.array(key_id, _STRING),
        "project_id": pa.array(project_id, _STRING),
        "minute": pa.array(minute, pa.uint32()),
        "requests": pa.array(requests, _UINT64),
        "errors": pa.array(errors, _UINT64),
        "denials": pa.array(denials, _UINT64),
    }
    for name in _OUTCOMES:
        columns[f"outcome_{name}"] = pa.array([counts.get(name, 0) for counts in outcomes], _UINT64)
    columns["distinct_ips"] = pa.array(distinct_ips, pa.uint32())
    columns["request_bytes"] = pa.array(request_bytes, _UINT64)
    columns["response_bytes"] = pa.array(response_bytes, _UINT64)
    columns["revision"] = pa.array(revision, _UINT64)
    return pa.table(columns)


def last_used_table(records: Sequence[LastUsed]) -> pa.Table:
    """The `key_last_used` rows of LastUsed records as one Arrow block (event_id as its UUID text)."""
    key_id, project_id, last_used_at, last_used_ip, route, service, event_id = zip(
        *map(_last_used_fields, records), strict=True
    )
    return pa.table(
        {
            "key_id": pa.array(key_id, _STRING),
            "project_id": pa.array(project_id, _STRING),
            "last_used_at": _epoch_millis(last_used_at),
            "last_used_ip": pa.array(last_used_ip, _STRING),
            "route": pa.array(route, _STRING),
            "service": pa.array(service, _STRING),
            "event_id": pa.array([v if type(v) is str else str(v) for v in event_id], _STRING),
        }
    )


_DENIALS_SQL = ", ".join(f"'{o.value}'" for o in OUTCOME_ORDER if o.value in
                        ("denied", "invalid", "expired", "revoked", "disabled", "rate_limited"))
RECOUNT_LATE_MINUTES = f"""
INSERT INTO key_usage_minute
    (key_id, project_id, minute, requests, errors, denials, {", ".join(f"outcome_{o}" for o in _OUTCOMES)},
     distinct_ips, request_bytes, response_bytes, revision)
SELECT e_key AS key_id, any(e_project), toStartOfMinute(e_at) AS minute, count(),
       countIf(e_outcome = 'error' OR e_status >= 500), countIf(e_outcome IN ({_DENIALS_SQL})),
       {", ".join(f"countIf(e_outcome = '{o}')" for o in _OUTCOMES)},
       uniqExact(e_ip), sum(e_request_bytes), sum(e_response_bytes), count()
FROM
(
    SELECT event_id, any(key_id) AS e_key, any(project_id) AS e_project, any(occurred_at) AS e_at,
           any(outcome) AS e_outcome, any(status) AS e_status, any(client_ip) AS e_ip,
           any(request_bytes) AS e_request_bytes, any(response_bytes) AS e_response_bytes
    FROM usage_events
    WHERE key_id IN {{keys:Array(String)}}
      AND occurred_at >= toDateTime64({{since:UInt32}}, 3, 'UTC')
      AND occurred_at < toDateTime64({{until:UInt32}}, 3, 'UTC')
    GROUP BY event_id
)
WHERE has(arrayZip({{pair_keys:Array(String)}}, {{pair_minutes:Array(UInt32)}}),
          (e_key, toUInt32(toStartOfMinute(e_at))))
GROUP BY e_key, minute
"""
"""Full rows of the minutes late events fell into, recounted from the audit trail (deduplicated by
event id). A recount holds every event stored for the minute, so its revision (its request count)
is at least that of any row written before: it wins, and late events count exactly once."""


def late_minutes(result: BatchResult) -> tuple[list[str], list[int]]:
    """The distinct (key, minute) pairs of a batch's late events, as two parallel lists."""
    if not result.late:
        return [], []
    if result.columns is not None:
        rows = result.late_index.tolist()
        keys = result.columns.key_id
        minutes = (result.columns.t_ms[result.late_index] // 60_000 * 60).tolist()
        pairs = sorted({(keys[r], m) for r, m in zip(rows, minutes, strict=True)})
    else:
        epoch = _EPOCH
        pairs = sorted({(e.key_id, int((e.occurred_at - epoch).total_seconds()) // 60 * 60) for e in result.late})
    return [k for k, _ in pairs], [m for _, m in pairs]


def _copies_in_batch(result: BatchResult) -> set[int]:
    """Positions in `result.late` of copies of events the batch itself holds: one accepted in it (its
    copy came after newer events), or a late event seen earlier in it (the first late copy stays)."""
    late_ints = [e.event_id.int for e in result.late]
    wanted = set(late_ints)
    if result.columns is not None:
        ints = result.columns.event_int
        accepted = wanted.intersection(map(ints.__getitem__, result.accepted_index.tolist()))
    else:
        accepted = wanted.intersection(e.event_id.int for e in result.accepted)
    copies: set[int] = set()
    seen: set[int] = set()
    for position, value in enumerate(late_ints):
        if value in accepted or value in seen:
            copies.add(position)
        seen.add(value)
    return copies


STORED_LATE_EVENTS = """
SELECT DISTINCT toString(event_id) AS stored_id
FROM usage_events
WHERE key_id IN {keys:Array(String)}
  AND occurred_at >= toDateTime64({since:UInt32}, 3, 'UTC')
  AND occurred_at < toDateTime64({until:UInt32}, 3, 'UTC')
  AND event_id IN {ids:Array(UUID)}
"""


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
        self.late_minutes_recounted = 0

    def write_batch(self, result: BatchResult) -> None:
        insert_arrow = getattr(self.backend, "insert_arrow", None)
        if insert_arrow is None:
            self._write_batch_json(result)
            return
        blocks: list[tuple[str, Callable[[], None], int]] = []
        if result.accepted or result.late:
            if result.columns is not None:
                block = usage_events_table_of(result)
            else:
                block = usage_events_table(result.accepted, result.late)
            blocks.append(("usage_events", lambda b=block: insert_arrow("usage_events", b), block.num_rows))
        if result.minute_rows is not None and len(result.minute_rows):
            block = minute_rows_table(result.minute_rows)
            blocks.append(
                ("key_usage_minute", lambda b=block: insert_arrow("key_usage_minute", b), block.num_rows)
            )
        if result.last_used:
            block = last_used_table(result.last_used)
            blocks.append(("key_last_used", lambda b=block: insert_arrow("key_last_used", b), block.num_rows))
        if result.signals:  # few rows: the JSON text is the simplest exact form of evidence and enums
            payload = _json_lines(signal_row(s) for s in result.signals)
            insert_json = self.backend.insert_json_rows
            blocks.append(("signals", lambda p=payload: insert_json("signals", p), len(result.signals)))
        with self._lock:
            for table, insert, rows in blocks:
                self._retrying(table, insert)
                self.rows_written += rows
            self._recount_late(result)

    def drop_stored_late(self, result: BatchResult) -> int:
        """Count as duplicates the late events the audit trail already holds (a re-ingested file),
        and late copies of events this batch itself holds (at-least-once copies in one batch).

        On-time events are recognised by the key's state; an event of a minute closed long ago
        only by the audit trail. One query per batch with late events, by key and time range.
        """
        if not result.late:
            return 0
        keys, minutes = late_minutes(result)
        ids = [str(e.event_id) for e in result.late]
        params = {"keys": sorted(set(keys)), "since": min(minutes), "until": max(minutes) + 60, "ids": ids}
        stored = {row["stored_id"] for row in self.backend.query(STORED_LATE_EVENTS, params)}
        copies = _copies_in_batch(result)
        if not stored and not copies:
            return 0
        keep = [i for i, event_id in enumerate(ids) if event_id not in stored and i not in copies]
        result.duplicates += len(ids) - len(keep)
        result.late = [result.late[i] for i in keep]
        result.late_index = result.late_index[keep] if len(result.late_index) else result.late_index
        return len(ids) - len(keep)

    def _recount_late(self, result: BatchResult) -> None:
        """Late events are in the audit trail now: rewrite their minutes' full rows from it."""
        self.recount_minutes(*late_minutes(result))

    def recount_minutes(self, keys: list[str], minutes: list[int]) -> None:
        """Rewrite the full rows of the (key, minute) pairs `keys[i], minutes[i]` from the audit trail
        (what a late event's minute gets; replay does the same for the minutes of stored late events)."""
        if not keys:
            return
        params = {"keys": sorted(set(keys)), "since": min(minutes), "until": max(minutes) + 60,
                  "pair_keys": keys, "pair_minutes": minutes}
        self._retrying("key_usage_minute", lambda: self.backend.command(RECOUNT_LATE_MINUTES, params))
        self.late_minutes_recounted += len(keys)
        self.rows_written += len(keys)  # one full row per recounted minute

    def _write_batch_json(self, result: BatchResult) -> None:
        """The JSONEachRow path, for backends without `insert_arrow` (the server; wrappers in tests)."""
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
            self._recount_late(result)

    def _insert_with_retry(self, table: str, payload: bytes) -> None:
        self._retrying(table, lambda: self.backend.insert_json_rows(table, payload))

    def _retrying(self, table: str, insert: Callable[[], None]) -> None:
        delay = 0.1
        started = time.monotonic()
        while True:
            try:
                insert()
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
