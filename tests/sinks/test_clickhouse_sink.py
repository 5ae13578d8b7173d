"""The sink's Arrow inserts into chDB store exactly what its JSONEachRow inserts store."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from ipaddress import IPv6Address, ip_address
from typing import Any

import pytest

from keytrail.schemas.usage import Outcome
from keytrail.schemas.usage_fast import FastUsageEvent
from keytrail.sql.backends import ChdbBackend, ClickHouseUnavailable
from keytrail.sql.migrate import migrate
from keytrail.stream_processors.core.aggregate import UsageAggregator
from keytrail.stream_processors.sinks.clickhouse import ClickHouseSink
from tests.factories import usage_event

HOSTILE = [
    "plain",
    "key' OR '1'='1",
    "'; DROP TABLE usage_events; --",
    '"double" `back` quotes',
    "back\\slash \\N \\0 \\t \\n",
    "tab\there",
    "new\nline\r\nand cr\r",
    "nul\x00byte",
    "日本語 ☃ naïve ünïcödé 😀 \u2028\u2029",
    "{key_id:String} %s $1 ?",
    "",
]
TABLES = {
    "usage_events": "event_id",
    "key_usage_minute": "key_id, minute, revision",
    "key_last_used": "key_id, last_used_at",
}
T0 = datetime(2026, 11, 2, 9, 0, 0, 1000, tzinfo=UTC)


class JsonOnly:
    """The backend without `insert_arrow`: the sink then writes JSONEachRow, as before Arrow."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.url = backend.url

    def insert_json_rows(self, table: str, payload: bytes) -> None:
        self.backend.insert_json_rows(table, payload)

    def command(self, sql: str, params: dict[str, Any] | None = None) -> None:
        self.backend.command(sql, params)  # the late-minute recount runs in ClickHouse either way

    def close(self) -> None:
        self.backend.close()


@pytest.fixture
def chdb(tmp_path):
    backend = ChdbBackend(tmp_path / "chdb")
    try:
        migrate(backend)
        for table in TABLES:  # compare the rows as inserted, not as merges happen to have replaced them
            backend.command(f"SYSTEM STOP MERGES {table}")
        yield backend
    finally:
        backend.close()


def hostile_events() -> list:
    events = []
    outcomes = list(Outcome)
    for index, text in enumerate(HOSTILE * 3):
        events.append(
            usage_event(
                f"key_{index % 4}",
                at=T0,
                seconds=index * 7.123 + (0.998 if index % 5 == 0 else 0),
                outcome=outcomes[index % len(outcomes)],
                status=(200, 403, 503, 0, 999)[index % 5],
                client_ip=("10.1.2.3", "2001:db8::1", "::ffff:192.0.2.7", "255.255.255.255", "::")[index % 5],
                route=f"/v1/{text}/{index}" if text else "/",
                service=f"svc {text}" if text else "svc",
                user_agent=text,
                request_id=text[::-1],
                latency_ms=(0.0, 12.3, 0.1, 86_400_000.0, 1 / 3, 1234.5678901234567)[index % 6],
                request_bytes=(0, 1, 2**53, 12345)[index % 4],
                response_bytes=(2**53, 0, 7)[index % 3],
                project_id=("proj_a", "proj.b:c-d")[index % 2],
            )
        )
    # the same instant written with a non-UTC offset is normalised by the contract
    events.append(
        usage_event("key_tz", at=datetime(2026, 11, 2, 11, 0, 0, 999000, tzinfo=timezone(timedelta(hours=2))))
    )
    return events


def as_fast(event) -> FastUsageEvent:
    return FastUsageEvent(**{name: getattr(event, name) for name in FastUsageEvent.__struct_fields__})


def snapshot(backend) -> dict[str, list[dict[str, Any]]]:
    """Every row as stored, but the wall-clock `inserted_at` that ClickHouse fills in."""
    rows = {
        table: backend.query(f"SELECT * FROM {table} ORDER BY {order}, toString(tuple(*))")
        for table, order in TABLES.items()
    }
    for table_rows in rows.values():
        for row in table_rows:
            row.pop("inserted_at", None)
    return rows


def write(sink: ClickHouseSink, events: list) -> None:
    core = UsageAggregator(allowed_lateness_s=60)
    states: dict = {}
    sink.write_batch(core.process(events[:-8], states))
    # a second batch re-sends grown minutes and brings events older than the allowed lateness
    late = [
        usage_event(
            "key_0",
            at=T0,
            seconds=-3600,
            user_agent=HOSTILE[4],
            route="/late\n'x'",
            event_id=uuid.UUID(int=7),
        )
    ]
    sink.write_batch(core.process(events[-8:] + late, states))


@pytest.mark.parametrize("kind", ["pydantic", "msgspec"])
def test_arrow_inserts_store_exactly_what_json_inserts_store(chdb, kind):
    events = hostile_events()
    if kind == "msgspec":
        events = [as_fast(e) for e in events]

    write(ClickHouseSink(JsonOnly(chdb)), events)
    via_json = snapshot(chdb)
    for table in TABLES:
        chdb.command(f"TRUNCATE TABLE {table}")
    sink = ClickHouseSink(chdb)
    write(sink, events)
    via_arrow = snapshot(chdb)

    assert via_arrow == via_json
    assert sum(len(rows) for rows in via_arrow.values()) == sink.rows_written
    assert len(via_arrow["usage_events"]) == len(events) + 1
    assert all(row["inserted_at"] for row in chdb.query("SELECT inserted_at FROM key_usage_minute"))
    assert [r["on_time"] for r in via_arrow["usage_events"]].count(0) == 1


def test_hostile_strings_and_millisecond_times_read_back_equal(chdb):
    events = hostile_events()
    sink = ClickHouseSink(chdb)
    sink.write_batch(UsageAggregator().process(events, {}))
    rows = {
        r["event_id"]: r
        for r in chdb.query(
            "SELECT toString(event_id) AS event_id, toUnixTimestamp64Milli(occurred_at) AS ms, route, service,"
            " user_agent, request_id, toString(client_ip) AS ip, toString(outcome) AS outcome, status,"
            " request_bytes, response_bytes, on_time FROM usage_events"
        )
    }
    assert len(rows) == len(events)
    for event in events:
        row = rows[str(event.event_id)]
        assert row["ms"] == (event.occurred_at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(
            milliseconds=1
        )
        assert (row["route"], row["service"], row["user_agent"], row["request_id"]) == (
            event.route,
            event.service,
            event.user_agent,
            event.request_id,
        )
        address = ip_address(event.client_ip)
        assert ip_address(row["ip"]) == (
            IPv6Address(f"::ffff:{address}") if address.version == 4 else address
        )
        assert (row["outcome"], row["status"], row["on_time"]) == (event.outcome.value, event.status, 1)
        assert (row["request_bytes"], row["response_bytes"]) == (event.request_bytes, event.response_bytes)
    tz_event = events[-1]
    assert rows[str(tz_event.event_id)]["ms"] % 1000 == 999
    (last,) = chdb.query(
        "SELECT toUnixTimestamp64Milli(last_used_at) AS ms, toString(event_id) AS event_id"
        " FROM key_last_used FINAL WHERE key_id = 'key_tz'"
    )
    assert last == {"ms": rows[str(tz_event.event_id)]["ms"], "event_id": str(tz_event.event_id)}


class FlakyArrow:
    """chDB whose first `insert_arrow` calls fail as an outage would."""

    def __init__(self, backend, failures: int) -> None:
        self.backend = backend
        self.url = backend.url
        self.failures = failures

    def insert_arrow(self, table, data):
        if self.failures:
            self.failures -= 1
            raise ClickHouseUnavailable("connection refused (outage)")
        self.backend.insert_arrow(table, data)

    def insert_json_rows(self, table, payload):
        self.backend.insert_json_rows(table, payload)

    def close(self):
        self.backend.close()


def test_arrow_inserts_are_retried_while_unavailable(chdb):
    sleeps: list[float] = []
    sink = ClickHouseSink(FlakyArrow(chdb, failures=3), sleep=sleeps.append)
    sink.write_batch(UsageAggregator().process([usage_event(seconds=i) for i in range(10)], {}))
    assert sink.retries == 3 and sleeps == [0.1, 0.2, 0.4]
    assert chdb.query("SELECT count() AS n FROM usage_events")[0]["n"] == 10


def test_refused_data_raises_without_retrying(chdb):
    chdb.command("DROP TABLE key_last_used")
    sink = ClickHouseSink(chdb, sleep=lambda s: pytest.fail("a refused insert was retried"))
    with pytest.raises(Exception, match="key_last_used|UNKNOWN_TABLE"):
        sink.write_batch(UsageAggregator().process([usage_event()], {}))
    assert sink.retries == 0
