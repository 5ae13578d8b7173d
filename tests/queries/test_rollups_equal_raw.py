"""Every rollup-backed canned query answers exactly as a reference that reads only the raw events.

Seeded random traffic goes through the real core and sink: several keys in two projects,
addresses in several networks, agents, routes, refused and failed requests, re-delivered
batches, events too late to count, a denial burst and a revoked key that is still used. It spans
the last ~50 hours up to now, so windows cover the live current hour, whole UTC days (read from
the daily rollups) and partial edge days (read hour by hour). Each query is compared, on random
windows and for every project filter, with SQL over `usage_events FINAL` (and the lifecycle
audit) alone: after the rollups were refreshed, and for the live set rollups also before any
refresh has seen the newest traffic.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from keytrail.schemas.usage import Outcome
from keytrail.sql.queries import query_spec, run_query
from keytrail.sql.queries.rollups import refresh_rollups
from keytrail.stream_processors.core.aggregate import UsageAggregator
from keytrail.stream_processors.sinks.clickhouse import ClickHouseSink
from tests.factories import usage_event

DENIALS = "('denied', 'invalid', 'expired', 'revoked', 'disabled', 'rate_limited')"
NETWORK = """if(startsWith(toString(network), '::ffff:'),
       concat(replaceOne(toString(network), '::ffff:', ''), '/24'), concat(toString(network), '/48'))"""
PROJECT = "({project:String} = '' OR project_id = {project:String})"
# "whole hours from the one containing `since` up to `until`": every hour that starts before until.
# Counts hold every stored event once, late ones too (the sink recounts their minutes from the
# audit trail, docs/exact-counts.md); address and network sets hold on-time events only.
WHOLE_HOURS = f"""
FROM usage_events FINAL
WHERE occurred_at >= toStartOfHour({{since:DateTime64(3, 'UTC')}})
  AND toStartOfHour(occurred_at) < {{until:DateTime64(3, 'UTC')}}
  AND {PROJECT}
"""
RANK = "multiIf({by:String} = 'errors', total_errors, {by:String} = 'denials', total_denials, total_requests)"

RAW_REFERENCE = {
    "top_keys": f"""
SELECT key_id, project_id, count() AS total_requests, countIf(outcome = 'error' OR status >= 500) AS total_errors,
       countIf(outcome IN {DENIALS}) AS total_denials, round(total_errors / total_requests, 4) AS error_rate,
       round(total_denials / total_requests, 4) AS denial_rate, uniqExact(toStartOfHour(occurred_at)) AS active_hours
{WHOLE_HOURS}
GROUP BY key_id, project_id HAVING {RANK} > 0 ORDER BY {RANK} DESC, key_id LIMIT {{limit:UInt32}}""",
    "project_usage": f"""
SELECT project_id, uniqExact(key_id) AS active_keys, count() AS total_requests,
       countIf(outcome = 'error' OR status >= 500) AS total_errors, countIf(outcome IN {DENIALS}) AS total_denials,
       round(total_errors / total_requests, 4) AS error_rate, round(total_denials / total_requests, 4) AS denial_rate,
       sum(request_bytes) AS total_request_bytes, sum(response_bytes) AS total_response_bytes
{WHOLE_HOURS}
GROUP BY project_id ORDER BY total_requests DESC, project_id""",
    "keys_many_networks": f"""
SELECT key_id, project_id, uniqExactIf(network, on_time = 1) AS networks, uniqExactIf(client_ip, on_time = 1) AS ips,
       count() AS total_requests,
       toStartOfHour(toDateTime(min(occurred_at), 'UTC')) AS first_hour,
       toStartOfHour(toDateTime(max(occurred_at), 'UTC')) AS last_hour,
       arraySlice(arraySort(groupUniqArrayIf({NETWORK}, on_time = 1)), 1, 20) AS sample_networks
{WHOLE_HOURS}
GROUP BY key_id, project_id HAVING networks >= {{min_networks:UInt32}} ORDER BY networks DESC, key_id
LIMIT {{limit:UInt32}}""",
    "denial_storms": f"""
SELECT key_id, project_id,
       toStartOfInterval(occurred_at, toIntervalMinute({{bucket_minutes:UInt32}})) AS bucket_start,
       bucket_start + toIntervalMinute({{bucket_minutes:UInt32}}) AS bucket_end,
       count() AS denials, uniqExact(client_ip) AS ips,
       arraySort(groupUniqArray(replaceOne(toString(client_ip), '::ffff:', ''))) AS sample_ips,
       arraySort(groupUniqArray(toString(outcome))) AS outcomes, arraySort(groupUniqArray(route)) AS routes,
       min(occurred_at) AS first_seen, max(occurred_at) AS last_seen
FROM usage_events FINAL
WHERE occurred_at >= {{since:DateTime64(3, 'UTC')}} AND occurred_at < {{until:DateTime64(3, 'UTC')}}
  AND {PROJECT} AND outcome IN {DENIALS}
GROUP BY key_id, project_id, bucket_start HAVING denials >= {{min_denials:UInt32}}
ORDER BY denials DESC, bucket_start, key_id LIMIT {{limit:UInt32}}""",
    "key_timeline": f"""
SELECT occurred_at, event_id, project_id, service, method, route, status, outcome,
       replaceOne(toString(client_ip), '::ffff:', '') AS client_ip, user_agent, latency_ms, request_bytes,
       response_bytes, request_id, on_time = 0 AS late
FROM usage_events FINAL
WHERE key_id = {{key_id:String}} AND occurred_at >= {{since:DateTime64(3, 'UTC')}}
  AND occurred_at < {{until:DateTime64(3, 'UTC')}} AND {PROJECT}
  AND ({{outcome:String}} = '' OR toString(outcome) = {{outcome:String}}) AND ({{route:String}} = '' OR route = {{route:String}})
ORDER BY occurred_at DESC, event_id LIMIT {{limit:UInt32}}""",
    "key_hours_of_week": f"""
SELECT toDayOfWeek(h, 0, {{timezone:String}}) AS weekday, toHour(h, {{timezone:String}}) AS hour,
       count() AS total_requests, countIf(outcome = 'error' OR status >= 500) AS total_errors,
       countIf(outcome IN {DENIALS}) AS total_denials, uniqExact(toDate(h, {{timezone:String}})) AS active_days,
       round(total_requests / sum(total_requests) OVER (), 4) AS share
FROM
(
    SELECT toStartOfHour(toDateTime(occurred_at, 'UTC')) AS h, outcome, status
{WHOLE_HOURS.replace("WHERE", "WHERE key_id = {key_id:String} AND", 1)}
)
GROUP BY weekday, hour ORDER BY weekday, hour""",
}
SAMPLED = {"denial_storms": ("sample_ips", "routes", 5), "inactive_key_use": ("sample_ips", "services", 5)}
"""Columns that hold up to N examples (groupUniqArray(N)): any N of the full set are right."""

KEYS = ("key_q1", "key_q2", "key_q3", "key_q4")
PROJECT_OF = {"key_q1": "proj_q", "key_q2": "proj_q", "key_q3": "proj_w", "key_q4": "proj_w"}
IPS = ("10.1.1.1", "10.1.1.2", "10.1.2.9", "192.0.2.7", "198.51.100.4", "2001:db8:5::1", "2001:db8:5::2", "2001:db8:6::1")
AGENTS = ("curl/8", "python-requests/2", "Go-http-client/1.1", "okhttp/4")
ROUTES = ("/v1/orders", "/v1/orders/{order_id}", "/v1/invoices", "/v1/admin", "/v1/users/{id}", "/v1/export", "/v2/x")
OUTCOMES = (Outcome.OK,) * 8 + (Outcome.DENIED, Outcome.ERROR, Outcome.RATE_LIMITED, Outcome.REVOKED, Outcome.EXPIRED)


def _event(rng: random.Random, key: str, at: datetime, outcome: Outcome | None = None, ip: str | None = None):
    outcome = outcome or rng.choice(OUTCOMES)
    status = 503 if outcome is Outcome.ERROR else (200 if outcome is Outcome.OK else 403)
    if outcome is Outcome.OK and rng.random() < 0.05:
        status = 500  # a failure the service still reported as ok
    return usage_event(
        key, at=at, event_id=uuid.UUID(int=rng.getrandbits(128)), outcome=outcome, status=status,
        client_ip=ip or rng.choice(IPS), user_agent=rng.choice(AGENTS), route=rng.choice(ROUTES),
        project_id=PROJECT_OF[key], request_bytes=rng.randrange(1000), response_bytes=rng.randrange(100_000),
        latency_ms=rng.uniform(1, 500),
    )


def traffic(rng: random.Random, start: datetime, end: datetime, n: int) -> list:
    span_ms = int((end - start).total_seconds() * 1000)
    events = [_event(rng, rng.choice(KEYS), start + timedelta(milliseconds=rng.randrange(span_ms))) for _ in range(n)]
    # a denial burst: 40 refusals from four addresses within three minutes
    burst = start + timedelta(milliseconds=rng.randrange(span_ms // 2))
    events += [_event(rng, "key_q3", burst + timedelta(seconds=rng.uniform(0, 180)), Outcome.DENIED, rng.choice(IPS[:4]))
               for _ in range(40)]
    return sorted(events, key=lambda e: e.occurred_at)


def write(store, aggregator, state, events, *, redeliver: bool) -> None:
    sink = ClickHouseSink(store)
    for at in range(0, len(events), 150):
        result = aggregator.process(events[at:at + 150], state)
        sink.write_batch(result)
        if redeliver and at % 300 == 0:
            sink.write_batch(result)  # at-least-once: the same batch written again


def lifecycle(store, at: datetime) -> None:
    """key_q2 is revoked at `at` (and goes on being used); key_q4 is disabled and enabled again."""
    rows = [
        ("key_q2", "revoked", at), ("key_q4", "disabled", at - timedelta(hours=20)),
        ("key_q4", "enabled", at - timedelta(hours=19)),
    ]
    store.insert_json_rows("key_lifecycle_events", b"\n".join(orjson.dumps({
        "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"q19/{key}/{action}")),
        "occurred_at": when.strftime("%Y-%m-%d %H:%M:%S.000"), "key_id": key, "project_id": PROJECT_OF[key],
        "action": action, "actor": "ops", "reason": "test", "before": "{}", "after": "{}",
    }) for key, action, when in rows))


BASELINE_FROM_EVENTS = f"""    last_day AS
    (
        SELECT
            count() AS requests, countIf(outcome = 'error' OR status >= 500) AS errors,
            countIf(outcome IN {DENIALS}) AS denials, uniqExactIf(client_ip, on_time = 1) AS ips,
            groupUniqArrayIf(network, on_time = 1) AS network_set, groupUniqArrayIf(route, on_time = 1) AS route_set,
            groupUniqArrayIf(user_agent, on_time = 1) AS agent_set
        FROM usage_events FINAL
        WHERE key_id = {{key_id:String}} AND occurred_at >= period_start AND occurred_at < period_end AND {PROJECT}
    ),
    before AS
    (
        SELECT
            [sum(requests), sum(errors), sum(denials), sum(distinct_ips), sum(distinct_networks), sum(distinct_routes),
             sum(distinct_user_agents)] AS totals,
            [max(requests), max(errors), max(denials), max(distinct_ips), max(distinct_networks), max(distinct_routes),
             max(distinct_user_agents)] AS maxima,
            groupUniqArrayArray(nets) AS networks_before, groupUniqArrayArray(day_routes) AS routes_before,
            groupUniqArrayArray(agents) AS agents_before
        FROM
        (
            SELECT
                toDate(occurred_at, 'UTC') AS day, count() AS requests, countIf(outcome = 'error' OR status >= 500) AS errors,
                countIf(outcome IN {DENIALS}) AS denials, uniqExactIf(client_ip, on_time = 1) AS distinct_ips,
                uniqExactIf(network, on_time = 1) AS distinct_networks, uniqExactIf(route, on_time = 1) AS distinct_routes,
                uniqExactIf(user_agent, on_time = 1) AS distinct_user_agents, groupUniqArrayIf(network, on_time = 1) AS nets,
                groupUniqArrayIf(route, on_time = 1) AS day_routes, groupUniqArrayIf(user_agent, on_time = 1) AS agents
            FROM usage_events FINAL
            WHERE key_id = {{key_id:String}} AND occurred_at >= toDateTime(baseline_start, 'UTC')
              AND occurred_at < toDateTime(baseline_end, 'UTC') AND {PROJECT}
            GROUP BY day
        )
    ),
"""


def reference_for(name: str) -> str:
    if name == "key_baseline":
        # the query's own comparison and shaping, over per-day and last-24-hour numbers from the events
        sql = query_spec(name).sql
        start, end = sql.index("    last_day AS\n"), sql.index("    compared AS\n")
        return sql[:start] + BASELINE_FROM_EVENTS + sql[end:]
    if name == "inactive_key_use":
        # the query's own counting over every event of the window, without the rollup's narrowing
        sql = query_spec(name).sql
        narrowing = "      AND key_id IN (SELECT key_id FROM refused_keys UNION DISTINCT SELECT key_id FROM changes)\n"
        assert narrowing in sql and sql.count("groupUniqArray(5)(") == 2
        return sql.replace(narrowing, "").replace("groupUniqArray(5)(", "groupUniqArray(")
    return RAW_REFERENCE[name]


def normalised(name: str, rows: list[dict], full: list[dict] | None = None) -> list[dict]:
    """Rows with example columns checked against the full sets and then dropped."""
    if name not in SAMPLED:
        return rows
    *columns, limit = SAMPLED[name]
    out = []
    for index, row in enumerate(rows):
        row = dict(row)
        for column in columns:
            sample = row.pop(column)
            if full is not None:
                whole = full[index][column]
                assert set(sample) <= set(whole) and len(sample) == min(limit, len(whole)), (name, column, sample, whole)
        out.append(row)
    return out


def random_window(rng: random.Random, start: datetime, end: datetime) -> tuple[datetime, datetime]:
    span_ms = int((end - start).total_seconds() * 1000)
    since = start + timedelta(milliseconds=rng.randrange(span_ms))
    until = since + timedelta(milliseconds=rng.randrange(1, span_ms))
    roll = rng.random()
    if roll < 0.3:  # whole hours
        since = since.replace(minute=0, second=0, microsecond=0)
        until = until.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    elif roll < 0.5:  # whole days
        since = since.replace(hour=0, minute=0, second=0, microsecond=0)
        until = until.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    return since, until


def cases(rng: random.Random, since: datetime, until: datetime):
    for project in ("", "proj_q", "proj_w"):
        window = {"since": since, "until": until, "project": project}
        yield "top_keys", {**window, "by": rng.choice(("requests", "errors", "denials")), "limit": 100}
        yield "project_usage", window
        yield "keys_many_networks", {**window, "min_networks": rng.choice((1, 2, 3, 4)), "limit": 100}
        yield "denial_storms", {**window, "min_denials": rng.choice((1, 3, 10, 20)),
                                "bucket_minutes": rng.choice((1, 5, 7, 60, 90, 120, 1440)), "limit": 1000}
        yield "inactive_key_use", {**window, "limit": 1000}
        for key in KEYS:
            yield "key_baseline", {"key_id": key, "project": project, "at": until, "baseline_days": rng.choice((1, 2, 7))}
            yield "key_hours_of_week", {**window, "key_id": key,
                                        "timezone": rng.choice(("UTC", "Europe/Berlin", "Asia/Kolkata"))}
            yield "key_timeline", {**window, "key_id": key, "limit": rng.choice((5, 100, 10000)),
                                   "outcome": rng.choice(("", "", "ok", "denied")), "route": rng.choice(("", ROUTES[0]))}


def compare(store, rng: random.Random, start: datetime, end: datetime, names: set[str] | None = None) -> int:
    answered = 0
    for _ in range(4):
        since, until = random_window(rng, start, end)
        for name, params in cases(rng, since, until):
            if names is not None and name not in names:
                continue
            bound = query_spec(name).bind(params)
            expected = store.query(reference_for(name), bound)
            got = run_query(store, name, **params)
            assert normalised(name, got, expected) == normalised(name, expected), (name, params)
            answered += bool(expected)
    return answered


@pytest.mark.parametrize("seed", [3, 4])
def test_rollup_queries_equal_the_raw_events(empty, seed):
    rng = random.Random(seed)
    now = datetime.now(UTC)
    start = now - timedelta(hours=50)
    aggregator, state = UsageAggregator(), {}
    events = traffic(rng, start, now - timedelta(minutes=30), 1500)
    lifecycle(empty, start + timedelta(hours=20))
    write(empty, aggregator, state, events, redeliver=True)
    # a few events far older than the stream's watermark: stored as late, counted nowhere else
    late = [_event(rng, rng.choice(KEYS), start + timedelta(hours=5, seconds=i), Outcome.DENIED) for i in range(25)]
    write(empty, aggregator, state, late, redeliver=True)
    assert empty.query("SELECT count() AS n FROM usage_events WHERE on_time = 0")[0]["n"] > 0
    refresh_rollups(empty)
    assert compare(empty, rng, start - timedelta(hours=2), now + timedelta(minutes=5)) > 20
    # newest traffic no refresh has seen: the live hours and the insert-triggered set rollups have it
    # (key_hours_of_week reads the daily rollup, which says it lags by up to a refresh)
    more = traffic(rng, now - timedelta(minutes=30), now, 300)
    write(empty, aggregator, state, more, redeliver=True)
    live = set(RAW_REFERENCE) - {"key_hours_of_week"} | {"inactive_key_use"}  # key_baseline's baseline is daily too
    assert compare(empty, rng, now - timedelta(minutes=90), now + timedelta(minutes=5), live) > 5
    refresh_rollups(empty)
    assert compare(empty, rng, start - timedelta(hours=2), now + timedelta(minutes=5)) > 20
