"""`keytrail.producers.generator`: realistic, valid, deterministic synthetic usage."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import orjson

from keytrail.producers.generator import UsageGenerator, generation_summary, usage_event_row, wire_json_lines
from keytrail.schemas.usage import KeyUsageEvent
from keytrail.stream_processors.sinks.clickhouse import usage_event_row as sink_usage_event_row

END = datetime(2026, 11, 2, tzinfo=UTC)


def sample(count=20_000, **options):
    generator = UsageGenerator(**{"key_count": 60, "days": 14, "seed": 11, "end": END, **options})
    return generator, list(generator.events(count))


def test_generated_events_validate_against_the_wire_contract():
    _, events = sample(5000)
    for event in events[::10]:
        KeyUsageEvent.model_validate(event)
    for line in itertools.islice(wire_json_lines(iter(events)), 200):
        KeyUsageEvent.model_validate_json(line)


def test_the_clickhouse_row_is_the_one_the_sink_writes():
    _, events = sample(500)
    for event in events[::25]:
        ours = orjson.loads(orjson.dumps(usage_event_row(event)))
        theirs = orjson.loads(orjson.dumps(sink_usage_event_row(KeyUsageEvent.model_validate(event), True)))
        assert set(ours) == set(theirs)
        for name in ours:
            if name == "occurred_at":  # both forms are DateTime64 text ClickHouse reads
                def as_time(text: str) -> datetime:
                    return datetime.fromisoformat(text.replace("Z", "+00:00")).replace(tzinfo=UTC)
                assert as_time(ours[name]) == as_time(theirs[name])
            else:
                assert ours[name] == theirs[name], name


def test_exactly_the_requested_number_of_events_in_time_order_within_the_span():
    generator, events = sample(12_345)
    assert len(events) == 12_345
    times = [e["occurred_at"] for e in events]
    assert times == sorted(times)
    assert times[0] >= "2026-10-19T00:00:00.000Z" and times[-1] < "2026-11-02T00:00:00.000Z"
    assert len({e["event_id"] for e in events}) == len(events)
    assert generator.start == datetime(2026, 10, 19, tzinfo=UTC)


def test_the_same_seed_gives_the_same_events_and_another_seed_does_not():
    _, first = sample(2000)
    _, again = sample(2000)
    _, other = sample(2000, seed=12)
    assert first == again
    assert first != other


def test_traffic_follows_each_keys_daily_and_weekly_rhythm_in_its_own_time_zone():
    generator, events = sample(60_000, incidents=False)
    keys = {k.key_id: k for k in generator.generated_keys}
    local_hours = defaultdict(Counter)
    local_days = defaultdict(Counter)
    for e in events:
        key = keys[e["key_id"]]
        at = datetime.fromisoformat(e["occurred_at"].replace("Z", "+00:00")) + timedelta(hours=key.utc_offset_hours)
        local_hours[key.profile.name][at.hour] += 1
        local_days[key.profile.name][at.weekday()] += 1
    office = local_hours["backend"]
    assert sum(office[h] for h in range(9, 17)) > 8 * sum(office[h] for h in range(0, 6))
    nightly = local_hours["nightly-batch"]
    assert sum(nightly[h] for h in range(1, 5)) > 0.8 * sum(nightly.values())
    evening = local_hours["mobile-app"]
    assert sum(evening[h] for h in range(18, 22)) > 1.5 * sum(evening[h] for h in range(8, 12))
    ci = local_days["ci-pipeline"]
    assert ci[2] > 4 * ci[6]  # CI runs on Wednesdays, hardly on Sundays


def test_keys_call_from_stable_address_pools_and_few_networks():
    generator, events = sample(40_000, incidents=False)
    networks = defaultdict(set)
    for e in events:
        networks[e["key_id"]].add(e["client_ip"].rsplit(".", 1)[0] if "." in e["client_ip"] else e["client_ip"][:14])
    profiles = {k.key_id: k.profile.name for k in generator.generated_keys}
    for key_id, seen in networks.items():
        limit = 14 if profiles[key_id] == "mobile-app" else 3
        assert len(seen) <= limit, (key_id, profiles[key_id], seen)


def test_routes_outcomes_and_popularity_look_like_real_traffic():
    generator, events = sample(40_000, incidents=False)
    outcomes = Counter(e["outcome"] for e in events)
    assert outcomes["ok"] > 0.97 * len(events)
    assert outcomes["error"] > 0 and outcomes["denied"] > 0 and outcomes["rate_limited"] > 0
    statuses = {e["status"] for e in events if e["outcome"] == "error"}
    assert statuses <= {500, 502, 503, 504}
    per_key = Counter(e["key_id"] for e in events).most_common()
    assert per_key[0][1] > 5 * per_key[len(per_key) // 2][1]  # a few keys carry most of the traffic
    by_service = defaultdict(set)
    for e in events:
        by_service[e["service"]].add(e["route"])
    assert all(len(routes) >= 3 for routes in by_service.values())


def test_incidents_are_laid_over_normal_traffic_and_described():
    generator, events = sample(20_000)
    summary = generation_summary(generator, len(events))
    kinds = {i["kind"]: i for i in summary["incidents"]}
    assert set(kinds) == {"leak", "denial_storm", "revoked_use"}
    leak = kinds["leak"]
    leaked = [e for e in events if e["key_id"] == leak["key_id"] and leak["from"] <= e["occurred_at"] < leak["to"]]
    assert len({e["client_ip"].rsplit(".", 1)[0] for e in leaked}) >= 10
    revoked = kinds["revoked_use"]
    after = [e for e in events if e["key_id"] == revoked["key_id"] and e["occurred_at"] >= revoked["from"]]
    assert after and all(e["outcome"] == "revoked" for e in after)
    storm = kinds["denial_storm"]
    burst = [e for e in events if e["key_id"] == storm["key_id"] and storm["from"] <= e["occurred_at"] < storm["to"]]
    assert sum(e["outcome"] in ("denied", "invalid") for e in burst) >= storm["events"] * 0.8


def test_existing_keys_can_be_driven():
    keys = [("key_demo_1", "proj_demo"), ("key_demo_2", "proj_demo")]
    generator = UsageGenerator(keys=keys, days=1, end=END, seed=1)
    events = list(generator.events(300))
    assert {(e["key_id"], e["project_id"]) for e in events} == set(keys)
    assert orjson.loads(next(wire_json_lines(iter(events))))["schema_version"] == 1
