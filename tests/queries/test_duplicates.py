"""Delivery is at least once: re-inserting the same data must not change any answer or rollup."""

from __future__ import annotations

from typing import Any

import orjson

from keytrail.sql.backends import ClickHouseBackend
from keytrail.sql.queries import run_query
from keytrail.sql.queries.rollups import refresh_rollups
from keytrail.stream_processors.core.aggregate import UsageAggregator
from keytrail.stream_processors.sinks.clickhouse import ClickHouseSink, usage_event_row
from tests.queries import fixture
from tests.queries.conftest import load_fixture


def answers(backend: ClickHouseBackend) -> dict[str, Any]:
    """Every canned query's rows, and both rollups in full."""
    result: dict[str, Any] = {
        f"{i}:{name}": run_query(backend, name, **params) for i, (name, params) in enumerate(fixture.ALL_CASES)
    }
    result["usage_hourly"] = backend.query("SELECT * FROM usage_hourly ORDER BY project_id, hour, key_id")
    result["usage_daily"] = backend.query("SELECT * FROM usage_daily ORDER BY project_id, day, key_id")
    return result


def test_the_fixture_answers_are_not_empty(empty):
    load_fixture(empty)
    before = answers(empty)
    assert sum(1 for rows in before.values() if rows) == len(before)
    hourly = before["usage_hourly"]
    assert sum(r["requests"] for r in hourly) == len(fixture.EVENTS)


def test_inserting_the_same_batch_twice_changes_no_answer(empty):
    sink = load_fixture(empty)
    before = answers(empty)
    sink.write_batch(UsageAggregator().process(fixture.EVENTS, {}))
    empty.insert_json_rows("key_lifecycle_events", fixture.lifecycle_rows(fixture.LIFECYCLE))
    refresh_rollups(empty)
    assert answers(empty) == before
    empty.command("OPTIMIZE TABLE usage_events FINAL")
    empty.command("OPTIMIZE TABLE key_usage_minute FINAL")
    assert answers(empty) == before


def test_replaying_the_log_in_other_batches_with_late_copies_changes_no_answer(empty):
    load_fixture(empty)
    before = answers(empty)
    # A restarted worker with empty state replays the log three events at a time: every minute
    # is re-sent, first with partial counts (older revisions), and last-used rows are re-sent.
    sink = ClickHouseSink(empty)
    core, states = UsageAggregator(), {}
    for start in range(0, len(fixture.EVENTS), 3):
        sink.write_batch(core.process(fixture.EVENTS[start : start + 3], states))
    # A copy of events that arrived past the allowed lateness is kept in the audit trail, flagged.
    late = [orjson.dumps(usage_event_row(e, on_time=False)) for e in fixture.EVENTS[:4]]
    empty.insert_json_rows("usage_events", b"\n".join(late))
    refresh_rollups(empty)
    assert answers(empty) == before
