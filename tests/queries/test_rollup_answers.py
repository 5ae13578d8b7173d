"""Queries that read rollups answer exactly as the same question asked of the raw events.

Random traffic (several keys, addresses, agents and outcomes; re-delivered batches; events too
late to count) goes through the real core and sink. Each rollup-backed query is compared with a
reference that reads only `usage_events FINAL` — on windows with partial edge hours, after the
rollups were refreshed, and again after more traffic landed that no refresh has seen yet.
"""

from __future__ import annotations

import random
import uuid
from datetime import timedelta

import pytest

from keytrail.schemas.usage import Outcome
from keytrail.sql.queries import query_spec, run_query
from keytrail.sql.queries.rollups import refresh_rollups
from keytrail.stream_processors.core.aggregate import UsageAggregator
from tests.factories import usage_event
from tests.queries.fixture import T0

DENIALS = "('denied', 'invalid', 'expired', 'revoked', 'disabled', 'rate_limited')"
WINDOW_SQL = """
FROM usage_events FINAL
WHERE key_id = {key_id:String}
  AND occurred_at >= {since:DateTime64(3, 'UTC')}
  AND occurred_at < {until:DateTime64(3, 'UTC')}
  AND ({project:String} = '' OR project_id = {project:String})
"""
NETWORK = """if(startsWith(toString(network), '::ffff:'),
       concat(replaceOne(toString(network), '::ffff:', ''), '/24'), concat(toString(network), '/48'))"""
RAW_REFERENCE = {
    "key_ips": f"""
SELECT replaceOne(toString(client_ip), '::ffff:', '') AS ip, {NETWORK} AS network,
       count() AS requests, countIf(outcome IN {DENIALS}) AS denials, countIf(outcome = 'error' OR status >= 500) AS errors,
       min(occurred_at) AS first_seen, max(occurred_at) AS last_seen,
       arraySlice(arraySort(groupUniqArray(user_agent)), 1, 5) AS user_agents
{WINDOW_SQL}
GROUP BY client_ip, network ORDER BY requests DESC, ip LIMIT {{limit:UInt32}}""",
    "key_networks": f"""
SELECT {NETWORK} AS network, uniqExact(client_ip) AS ips, count() AS requests,
       countIf(outcome IN {DENIALS}) AS denials, min(occurred_at) AS first_seen, max(occurred_at) AS last_seen
{WINDOW_SQL}
GROUP BY usage_events.network ORDER BY requests DESC, network LIMIT {{limit:UInt32}}""",
    "key_user_agents": f"""
SELECT user_agent, count() AS requests, uniqExact(client_ip) AS ips, countIf(outcome IN {DENIALS}) AS denials,
       min(occurred_at) AS first_seen, max(occurred_at) AS last_seen
{WINDOW_SQL}
GROUP BY user_agent ORDER BY requests DESC, user_agent LIMIT {{limit:UInt32}}""",
}
KEYS = ("key_r1", "key_r2", "key_r3")
IPS = ("10.1.1.1", "10.1.1.2", "10.1.2.9", "192.0.2.7", "2001:db8:5::1", "2001:db8:5::2", "2001:db8:6::1")
AGENTS = ("curl/8", "python-requests/2", "Go-http-client/1.1", "zgrab/0.x", "okhttp/4", "k6/0.5", "a", "b")
OUTCOMES = (Outcome.OK,) * 6 + (Outcome.DENIED, Outcome.ERROR, Outcome.RATE_LIMITED, Outcome.REVOKED)


def traffic(rng: random.Random, start, hours: int, n: int):
    events = []
    for _ in range(n):
        key = rng.choice(KEYS)
        outcome = rng.choice(OUTCOMES)
        events.append(usage_event(
            key, at=start + timedelta(milliseconds=rng.randrange(hours * 3_600_000)),
            event_id=uuid.UUID(int=rng.getrandbits(128)), outcome=outcome,
            status=503 if outcome is Outcome.ERROR else (403 if outcome is not Outcome.OK else 200),
            client_ip=rng.choice(IPS), user_agent=rng.choice(AGENTS), project_id="proj_r" if key != "key_r3" else "proj_s",
        ))
    return sorted(events, key=lambda e: e.occurred_at)


def write(store, aggregator, state, events, *, redeliver: bool) -> None:
    from keytrail.stream_processors.sinks.clickhouse import ClickHouseSink

    sink = ClickHouseSink(store)
    for at in range(0, len(events), 200):
        result = aggregator.process(events[at:at + 200], state)
        sink.write_batch(result)
        if redeliver and at % 400 == 0:
            sink.write_batch(result)  # at-least-once: the same batch written again


def compare(store, rng: random.Random, start, hours: int) -> int:
    compared = 0
    for _ in range(5):
        since = start + timedelta(milliseconds=rng.randrange(hours * 3_600_000))
        until = since + timedelta(milliseconds=rng.randrange(1, hours * 3_600_000))
        if rng.random() < 0.3:  # whole hours too
            since = since.replace(minute=0, second=0, microsecond=0)
            until = until.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        for key in KEYS:
            for project in ("", "proj_r"):
                params = {"key_id": key, "since": since, "until": until, "project": project, "limit": 10000}
                for name, reference in RAW_REFERENCE.items():
                    bound = query_spec(name).bind(params)
                    expected = store.query(reference, bound)
                    assert run_query(store, name, **params) == expected, (name, params)
                    compared += bool(expected)
    return compared


@pytest.mark.parametrize("seed", [1, 2])
def test_client_rollup_answers_equal_the_raw_events(empty, seed):
    rng = random.Random(seed)
    start = T0 - timedelta(hours=30)
    aggregator, state = UsageAggregator(), {}
    events = traffic(rng, start, 24, 1500)
    # a few events far older than the stream's watermark: stored as late, counted nowhere else
    late = traffic(rng, start - timedelta(hours=3), 2, 20)
    write(empty, aggregator, state, events, redeliver=True)
    write(empty, aggregator, state, late, redeliver=False)
    assert empty.query("SELECT count() AS n FROM usage_events WHERE on_time = 0")[0]["n"] > 0
    refresh_rollups(empty)
    assert compare(empty, rng, start - timedelta(hours=3), 27) > 0
    # more traffic that no refresh has seen: the queries read those key-hours from the events
    more = traffic(rng, start + timedelta(hours=20), 6, 400)
    write(empty, aggregator, state, more, redeliver=True)
    assert compare(empty, rng, start, 26) > 0
    refresh_rollups(empty)
    assert compare(empty, rng, start, 26) > 0
