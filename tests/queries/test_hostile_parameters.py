"""Hostile parameter values are data: they match what they literally say, and never change a query."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from keytrail.sql.queries import query_spec, run_query
from keytrail.sql.queries.rollups import refresh_rollups
from keytrail.stream_processors.core.aggregate import UsageAggregator
from keytrail.stream_processors.sinks.clickhouse import ClickHouseSink
from tests.factories import usage_event
from tests.queries.fixture import AT, T0, WINDOW, s

HOSTILE = [
    "key' OR '1'='1",
    "'; DROP TABLE usage_events; --",
    "x'); DROP TABLE key_last_used; SELECT ('",
    "\\'; DROP TABLE usage_events; --",
    '"double" `back` quotes',
    "日本語のキー ☃ naïve ünïcödé",
    "{key_id:String} {project:String}",
    "%s %(key_id)s $1 ?",
    "back\\slash \\N \\0",
    "tab\there",
    "new\nline",
    "",
]
HOSTILE_ROUTE = "/v1/x'; DROP TABLE usage_events; --/日本/{id}"
HOSTILE_AGENT = 'Mozilla/5.0 ☃ "quoted" back\\slash'
BACKSLASH_ROUTE = "/v1/files/C:\\Windows\\{name}\\n"

TABLES = ("usage_events", "key_usage_minute", "key_last_used", "key_lifecycle_events", "key_usage_hourly", "alerts")


@pytest.fixture(scope="module")
def hostile(loaded):
    """The fixture plus one event whose route and user agent are themselves hostile text."""
    events = [
        usage_event("key_hostile", at=s(30), project_id="proj_x", route=HOSTILE_ROUTE, user_agent=HOSTILE_AGENT,
                    client_ip="10.66.0.1"),
        usage_event("key_hostile", at=s(31), project_id="proj_x", route=BACKSLASH_ROUTE, client_ip="10.66.0.1"),
    ]
    ClickHouseSink(loaded).write_batch(UsageAggregator().process(events, {}))
    # The hourly rollup refreshes on its own every minute; without this, a refresh that lands
    # between a test's two counts picks up these events and looks like a write by the query.
    refresh_rollups(loaded)
    return loaded


def table_counts(backend) -> dict[str, int]:
    return {t: backend.query(f"SELECT count() AS n FROM {t} FINAL")[0]["n"] for t in TABLES}  # refreshes append versions


@pytest.mark.parametrize("value", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_key_id_matches_nothing_and_changes_nothing(hostile, value):
    before = table_counts(hostile)
    for name in ("key_timeline", "key_ips", "key_routes", "key_hours_of_week", "key_audit"):
        assert run_query(hostile, name, key_id=value, since=T0 - timedelta(days=30), until=AT) == []
    assert table_counts(hostile) == before


@pytest.mark.parametrize("value", HOSTILE[:-1], ids=range(len(HOSTILE) - 1))
def test_hostile_project_sees_nothing(hostile, value):
    before = table_counts(hostile)
    assert run_query(hostile, "top_keys", project=value, **WINDOW) == []
    assert run_query(hostile, "keys_many_networks", project=value, min_networks=1, **WINDOW) == []
    assert table_counts(hostile) == before


def test_a_hostile_route_is_matched_literally(hostile):
    rows = run_query(hostile, "key_timeline", key_id="key_hostile", route=HOSTILE_ROUTE, **WINDOW)
    assert [(r["route"], r["user_agent"]) for r in rows] == [(HOSTILE_ROUTE, HOSTILE_AGENT)]
    assert run_query(hostile, "key_timeline", key_id="key_hostile", route=HOSTILE_ROUTE + " ", **WINDOW) == []


def test_a_route_with_backslashes_is_matched_literally(hostile):
    rows = run_query(hostile, "key_timeline", key_id="key_hostile", route=BACKSLASH_ROUTE, **WINDOW)
    assert [r["route"] for r in rows] == [BACKSLASH_ROUTE]


def test_hostile_strings_in_arrays_come_back_unchanged(hostile):
    keys = HOSTILE + ["key_alpha"]
    created = [T0 - timedelta(days=90)] * len(keys)
    rows = run_query(hostile, "never_used_keys", key_ids=keys, created_ats=created, idle_days=1, at=AT)
    assert sorted(r["key_id"] for r in rows) == sorted(HOSTILE)
    assert table_counts(hostile)["usage_events"] > 0


def test_the_runner_sends_the_sql_file_unchanged_and_values_only_as_parameters():
    sent: list[tuple[str, dict[str, Any]]] = []

    class Recorder:
        url = "recorder://"

        def query(self, sql, params=None):
            sent.append((sql, params or {}))
            return []

    value = "'; DROP TABLE usage_events; --"
    run_query(Recorder(), "key_timeline", key_id=value, project=value, route=value, since="1h")  # type: ignore[arg-type]
    sql, params = sent[0]
    assert sql == query_spec("key_timeline").sql
    assert value not in sql
    assert (params["key_id"], params["project"], params["route"]) == (value, value, value)
