"""The hourly and daily rollups: full values per key, recomputed on refresh, never counted twice."""

from __future__ import annotations

from datetime import timedelta

import pytest

from keytrail.schemas.timestamps import utc_now
from keytrail.sql.queries import run_query
from keytrail.sql.queries.retention import RetentionError, apply_retention, current_retention
from keytrail.sql.queries.rollups import refresh_rollups
from keytrail.stream_processors.core.aggregate import UsageAggregator
from keytrail.stream_processors.sinks.clickhouse import ClickHouseSink
from tests.queries import fixture
from tests.queries.fixture import T0, event, s


def hourly(backend, key_id):
    return backend.query(
        "SELECT hour, requests, errors, denials, outcome_ok, outcome_error, outcome_denied, active_minutes, "
        "distinct_ips, distinct_networks, request_bytes FROM usage_hourly WHERE key_id = {k:String} ORDER BY hour",
        {"k": key_id},
    )


def test_rollups_hold_full_values_per_key_hour_and_day(empty):
    sink = ClickHouseSink(empty)
    sink.write_batch(UsageAggregator().process(fixture.EVENTS, {}))
    refresh_rollups(empty)
    assert [tuple(r.values()) for r in hourly(empty, "key_alpha")] == [
        ("2026-10-30T09:00:00Z", 1, 0, 0, 1, 0, 0, 1, 1, 1, 100),
        ("2026-11-02T09:00:00Z", 4, 1, 1, 2, 1, 1, 3, 3, 2, 400),
        ("2026-11-02T10:00:00Z", 1, 0, 0, 1, 0, 0, 1, 1, 1, 100),
    ]
    daily = empty.query(
        "SELECT day, requests, errors, denials, distinct_ips, distinct_networks FROM usage_daily "
        "WHERE project_id = 'proj_b' ORDER BY key_id, day"
    )
    assert [tuple(r.values()) for r in daily] == [
        ("2026-11-02", 5, 0, 0, 5, 4),  # key_delta
        ("2026-11-02", 3, 0, 1, 2, 1),  # key_gamma
    ]


def test_a_minute_resent_after_a_late_event_updates_the_rollups_on_refresh(empty):
    sink = ClickHouseSink(empty)
    core, states = UsageAggregator(), {}
    sink.write_batch(core.process(fixture.EVENTS, states))
    refresh_rollups(empty)
    before = {r["hour"]: r["requests"] for r in hourly(empty, "key_delta")}
    # 30 s older than key_delta's newest event, within the allowed lateness: its minute is re-sent
    late = event("d-late", "key_delta", s(270), "/v1/invoices/{invoice_id}", 200, "ok", "10.0.9.9", "okhttp/4.12.0")
    result = core.process([late], states)
    assert [m.requests for m in result.minutes] == [2]
    sink.write_batch(result)
    sink.write_batch(result)
    refresh_rollups(empty)
    after = hourly(empty, "key_delta")
    assert {r["hour"]: r["requests"] for r in after} == {h: n + 1 for h, n in before.items()}
    assert after[0]["distinct_ips"] == 6
    daily = empty.query("SELECT requests, distinct_networks FROM usage_daily WHERE key_id = 'key_delta'")
    assert daily == [{"requests": 6, "distinct_networks": 5}]


def test_refreshing_without_new_data_changes_nothing(empty):
    ClickHouseSink(empty).write_batch(UsageAggregator().process(fixture.EVENTS, {}))
    refresh_rollups(empty)
    first = empty.query("SELECT * FROM usage_hourly ORDER BY project_id, hour, key_id")
    refresh_rollups(empty)
    refresh_rollups(empty)
    assert empty.query("SELECT * FROM usage_hourly ORDER BY project_id, hour, key_id") == first
    assert sum(r["requests"] for r in first) == len(fixture.EVENTS)
    assert min(r["hour"] for r in first) == (T0 - timedelta(days=40)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_retention_is_set_by_ttl_and_shortening_needs_confirmation(empty):
    assert current_retention(empty) == {
        "usage_events": 400, "key_usage_minute": 400, "key_usage_hourly": 400, "key_usage_hour_sets": 400,
        "key_usage_daily": 1100, "key_usage_day_sets": 1100}
    changes = apply_retention(empty, 730)
    assert [(c.table, c.before_days, c.after_days) for c in changes] == [
        ("usage_events", 400, 730), ("key_usage_minute", 400, 730), ("key_usage_hourly", 400, 730),
        ("key_usage_hour_sets", 400, 730)]
    assert apply_retention(empty, 730) == []
    with pytest.raises(RetentionError, match="shortens retention .*usage_events 730 -> 90 days"):
        apply_retention(empty, 90)
    assert current_retention(empty)["usage_events"] == 730
    apply_retention(empty, 90, rollup_days=365, allow_shrink=True)
    assert current_retention(empty) == {
        "usage_events": 90, "key_usage_minute": 90, "key_usage_hourly": 90, "key_usage_hour_sets": 90,
        "key_usage_daily": 365, "key_usage_day_sets": 365}
    with pytest.raises(RetentionError, match="between 1 and 36500"):
        apply_retention(empty, 0)


def test_retention_deletes_only_what_is_older_than_the_ttl(empty):
    ClickHouseSink(empty).write_batch(UsageAggregator().process(fixture.EVENTS, {}))
    days_since_idle_use = (empty.query("SELECT dateDiff('day', toDateTime64('2026-09-23 09:00:00', 3, 'UTC'), now()) AS d")[0]["d"])
    apply_retention(empty, days_since_idle_use - 1, allow_shrink=True)
    empty.command("OPTIMIZE TABLE usage_events FINAL")
    remaining = empty.query("SELECT key_id FROM usage_events WHERE key_id = 'key_idle'")
    assert remaining == []
    assert empty.query("SELECT count() AS n FROM usage_events")[0]["n"] == len(fixture.EVENTS) - 1


def test_the_current_and_previous_hour_are_exact_before_any_refresh(empty):
    for view in ("key_usage_hourly_refresh", "key_usage_daily_refresh"):
        empty.command(f"SYSTEM STOP VIEW {view}")
    try:
        now = utc_now()
        recent = [
            event(f"r{i}", "key_alpha", now - timedelta(minutes=i), "/v1/orders", 200, "ok", f"10.7.{i}.1", "curl/8.5.0")
            for i in range(5, 0, -1)
        ]
        ClickHouseSink(empty).write_batch(UsageAggregator().process(recent, {}))
        assert empty.query("SELECT count() AS n FROM key_usage_hourly FINAL") == [{"n": 0}]
        rows = hourly(empty, "key_alpha")
        assert sum(r["requests"] for r in rows) == 5
        assert sum(r["distinct_networks"] for r in rows) >= 5
        top = run_query(empty, "top_keys", since="2h")
        assert [(r["key_id"], r["total_requests"]) for r in top] == [("key_alpha", 5)]
    finally:
        for view in ("key_usage_hourly_refresh", "key_usage_daily_refresh"):
            empty.command(f"SYSTEM START VIEW {view}")
