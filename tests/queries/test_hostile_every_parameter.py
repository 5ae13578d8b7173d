"""Every text parameter of every canned query takes hostile text as plain data.

The stored data itself holds keys, projects, routes, user agents, actors and reasons that are
hostile text (quotes, backslashes, tabs, newlines, carriage returns, NUL, unicode, SQL and
placeholder fragments), written through the real core and sink. Each canned query is asked with
those values in *every* String / Project / Array(String) parameter it has, and must return
exactly the rows of that value: no error, no injection, nothing of another key or project, and
no table changes. Parameters of closed types (Enum, Timezone) refuse such text with a clear error.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import orjson
import pytest

from keytrail.schemas.usage import KeyUsageEvent, Outcome
from keytrail.sql.queries import InvalidParameter, query_spec, run_query
from keytrail.sql.queries.rollups import refresh_rollups
from keytrail.sql.queries.runner import CANNED_QUERIES
from keytrail.stream_processors.core.aggregate import UsageAggregator
from keytrail.stream_processors.sinks.clickhouse import ClickHouseSink
from tests.queries.fixture import AT, T0, WINDOW, s

HOSTILE = [
    "key' OR '1'='1",
    "'; DROP TABLE usage_events; --",
    "x'); DROP TABLE key_last_used; SELECT ('",
    "\\'; SELECT 1; --",
    '"double" `back` quotes',
    "日本語のキー ☃ naïve ünïcödé 🔑",
    "{key_id:String} {project:String}",
    "%s %(key_id)s $1 ? $$heredoc$$",
    "back\\slash \\N \\0 \\t",
    "tab\there",
    "new\nline",
    "carriage\rreturn",
    "nul\0byte",
    "/* comment */ -- trailing",
]
TEXT_TYPES = ("String", "Project", "Array(String)")
CREATED_AT = T0 - timedelta(days=90)


def _events(index: int, value: str) -> list[KeyUsageEvent]:
    """Three events of hostile key `value` in hostile project `value`: ok, denied, revoked.

    Built without validation: the event contract refuses such ids at the door, but a table
    may still hold them (another writer, an older version) and the queries must stay exact.
    """
    events = []
    for n, outcome in enumerate((Outcome.OK, Outcome.DENIED, Outcome.REVOKED)):
        events.append(KeyUsageEvent.model_construct(
            event_id=uuid.uuid5(uuid.NAMESPACE_URL, f"hostile/{index}/{n}"), schema_version=1,
            occurred_at=s(30 + n), key_id=value, project_id=value, service="orders-api", method="GET",
            route=value, status=200 if outcome is Outcome.OK else 403, outcome=outcome, latency_ms=10.0,
            request_bytes=100, response_bytes=2000, client_ip=f"10.77.{index}.{1 + n % 2}", user_agent=value,
            request_id=f"req-hostile-{index}-{n}",
        ))
    return events


def _lifecycle_row(index: int, value: str) -> bytes:
    return orjson.dumps({
        "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"hostile-lc/{index}")),
        "occurred_at": CREATED_AT.strftime("%Y-%m-%d %H:%M:%S.000"), "key_id": value, "project_id": value,
        "action": "created", "actor": value, "reason": value, "before": "null", "after": "{}",
    })


@pytest.fixture(scope="module")
def stored(loaded):
    """The hand-written fixture plus, for each hostile value, a key and project of that name."""
    events = [e for i, v in enumerate(HOSTILE) for e in _events(i, v)]
    ClickHouseSink(loaded).write_batch(UsageAggregator().process(events, {}))
    loaded.insert_json_rows("key_lifecycle_events", b"\n".join(_lifecycle_row(i, v) for i, v in enumerate(HOSTILE)))
    refresh_rollups(loaded)
    return loaded


def _row(rows: list[dict[str, Any]], **where: Any) -> dict[str, Any]:
    found = [r for r in rows if all(r[k] == v for k, v in where.items())]
    assert len(found) == 1, (where, rows)
    return found[0]


Check = Callable[[str, list[dict[str, Any]]], None]


def _timeline(h, rows):
    assert len(rows) == 3
    assert {(r["route"], r["user_agent"], r["project_id"]) for r in rows} == {(h, h, h)}


def _ips(h, rows):
    assert sorted(r["requests"] for r in rows) == [1, 2]
    assert all(r["user_agents"] == [h] for r in rows)


def _networks(h, rows):
    assert [(r["ips"], r["requests"], r["denials"]) for r in rows] == [(2, 3, 2)]


def _routes(h, rows):
    assert [(r["route"], r["requests"], r["denials"]) for r in rows] == [(h, 3, 2)]


def _agents(h, rows):
    assert [(r["user_agent"], r["requests"], r["ips"]) for r in rows] == [(h, 3, 2)]


def _hours(h, rows):
    assert [(r["weekday"], r["hour"], r["total_requests"], r["total_denials"]) for r in rows] == [(1, 9, 3, 2)]


def _baseline(h, rows):
    assert _row(rows, metric="requests")["last_24h"] == 3
    assert _row(rows, metric="routes")["examples"] == [h]
    assert _row(rows, metric="user_agents")["examples"] == [h]


def _audit(h, rows):
    assert [(r["action"], r["actor"], r["reason"], r["project_id"]) for r in rows] == [("created", h, h, h)]


def _top(h, rows):
    assert [(r["key_id"], r["project_id"], r["total_requests"], r["total_denials"]) for r in rows] == [(h, h, 3, 2)]


def _projects(h, rows):
    assert [(r["project_id"], r["active_keys"], r["total_requests"]) for r in rows] == [(h, 1, 3)]


def _networks_many(h, rows):
    assert [(r["key_id"], r["project_id"], r["networks"], r["ips"]) for r in rows] == [(h, h, 1, 2)]


def _storms(h, rows):
    assert {(r["key_id"], r["project_id"]) for r in rows} == {(h, h)}
    assert sum(r["denials"] for r in rows) == 2
    assert all(r["routes"] == [h] for r in rows)


def _inactive(h, rows):
    assert [(r["key_id"], r["project_id"], r["refused_as_inactive"], r["requests"]) for r in rows] == [(h, h, 1, 1)]


def _idle(h, rows):
    assert [(r["key_id"], r["project_id"], r["last_route"]) for r in rows] == [(h, h, h)]


def _never(h, rows):
    assert [r["key_id"] for r in rows] == [h + "\0unused"]


def _cases(h: str) -> dict[str, tuple[dict[str, Any], Check]]:
    """Per canned query: parameters with `h` in every text parameter, and what the answer must be."""
    window = {**WINDOW, "project": h}
    key = {"key_id": h, **window}
    return {
        "key_timeline": ({**key, "route": h}, _timeline),
        "key_ips": (key, _ips),
        "key_networks": (key, _networks),
        "key_routes": (key, _routes),
        "key_user_agents": (key, _agents),
        "key_hours_of_week": ({**key, "since": T0 - timedelta(days=1)}, _hours),
        "key_baseline": ({"key_id": h, "project": h, "at": AT, "baseline_days": 7}, _baseline),
        "key_audit": ({**key, "since": T0 - timedelta(days=100)}, _audit),
        "top_keys": ({**window, "by": "denials"}, _top),
        "project_usage": (window, _projects),
        "keys_many_networks": ({**window, "min_networks": 1}, _networks_many),
        "denial_storms": ({**window, "min_denials": 1}, _storms),
        "inactive_key_use": (window, _inactive),
        "idle_keys": ({"key_ids": [h], "created_ats": [CREATED_AT], "idle_days": 0, "at": AT, "project": h}, _idle),
        "never_used_keys": ({"key_ids": [h, h + "\0unused"], "created_ats": [CREATED_AT] * 2, "idle_days": 1,
                             "at": AT, "project": h}, _never),
    }


def test_the_cases_cover_every_text_parameter_of_every_canned_query():
    cases = _cases("marker\0value")
    assert set(cases) == set(CANNED_QUERIES)
    for name, (params, _check) in cases.items():
        text_params = {p.name for p in query_spec(name).params if p.base_type in TEXT_TYPES}
        given = {p: v if isinstance(v, list) else [v] for p, v in params.items()}
        missing = {p for p in text_params if not any("marker\0value" in str(v) for v in given.get(p, []))}
        assert not missing, f"{name}: {sorted(missing)} not given the hostile value"


def table_counts(backend) -> dict[str, int]:
    tables = ("usage_events", "key_usage_minute", "key_last_used", "key_lifecycle_events", "signals", "alerts")
    return {t: backend.query(f"SELECT count() AS n FROM {t}")[0]["n"] for t in tables}


@pytest.mark.parametrize("value", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_text_in_every_parameter_returns_exactly_its_own_rows(stored, value):
    before = table_counts(stored)
    for name, (params, check) in _cases(value).items():
        rows = run_query(stored, name, **params)
        try:
            check(value, rows)
        except AssertionError as exc:
            raise AssertionError(f"{name} with {value!r}: {exc}") from None
    assert table_counts(stored) == before


@pytest.mark.parametrize("value", HOSTILE, ids=range(len(HOSTILE)))
def test_closed_type_parameters_refuse_hostile_text_with_a_clear_error(stored, value):
    for name, param in (("key_timeline", "outcome"), ("top_keys", "by"), ("key_hours_of_week", "timezone")):
        extra = {"key_id": "key_alpha"} if name != "top_keys" else {}
        with pytest.raises(InvalidParameter) as refused:
            run_query(stored, name, **extra, **{param: value})
        assert refused.value.name == param
