"""Bad input on the real broker: 10,000 malformed payloads mixed into valid traffic all reach the
dead-letter topic with a reason, every valid event is counted, and the worker keeps going."""

from __future__ import annotations

import random
import uuid
from collections import Counter
from datetime import timedelta

import orjson
import pytest
from confluent_kafka import Producer

from keytrail.schemas.codec import encode_usage_event
from keytrail.schemas.timestamps import utc_now
from keytrail.schemas.topics import Topics
from keytrail.sql.backends import open_clickhouse
from keytrail.stream_processors.topics_admin import ensure_topics
from tests.e2e.pipeline_processes import KeytrailProcess, consume_all, group_caught_up, wait_until
from tests.factories import usage_event

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTITIONS = 4
MALFORMED = 10_000
VALID = 5_000


def malformed_payload(rng: random.Random, valid: dict, marker: str) -> tuple[str, bytes]:
    """One broken payload of a known kind; each carries the marker so this test finds its own."""
    kind = rng.choice(["broken_json", "wrong_type", "oversize", "unknown_key", "future", "not_an_object"])
    data = {**valid, "event_id": str(uuid.uuid4()), "request_id": marker}
    if kind == "broken_json":
        return kind, b'{"request_id": "' + marker.encode() + b'", ' + orjson.dumps(data)[1 : rng.randrange(5, 60)]
    if kind == "wrong_type":
        data[rng.choice(["status", "latency_ms", "request_bytes", "occurred_at"])] = {"nested": marker}
    elif kind == "oversize":
        data[rng.choice(["route", "user_agent", "service"])] = "x" * rng.randrange(600, 5_000)
    elif kind == "unknown_key":
        data[f"surprise_{rng.randrange(100)}"] = marker
    elif kind == "future":
        data["occurred_at"] = (utc_now() + timedelta(days=rng.randrange(1, 400))).isoformat()
    else:
        return kind, orjson.dumps([marker, data])
    return kind, orjson.dumps(data)


@pytest.fixture(scope="module")
def bad_input_run(kafka_bootstrap, tmp_path_factory, artifacts_dir):
    """One worker run over 10,000 malformed payloads mixed into 5,000 valid events."""
    tmp_path = tmp_path_factory.mktemp("bad-input")
    unique = uuid.uuid4().hex[:10]
    ensure_topics(kafka_bootstrap, PARTITIONS)
    rng = random.Random(5)
    marker = f"bad-{unique}"
    keys = [f"key_bad_{unique}_{i}" for i in range(20)]
    start = utc_now() - timedelta(hours=1)
    # Idempotent, as KeyTrail's SDK: without it librdkafka may retry a timed-out batch after later
    # ones and reorder a key's events, which the worker then rightly treats as late.
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "partitioner": "murmur2_random", "linger.ms": 20,
                         "enable.idempotence": True})
    template = orjson.loads(encode_usage_event(usage_event(keys[0], at=start)))
    kinds: Counter[str] = Counter()
    valid_per_key: Counter[str] = Counter()
    valid_sent = bad_sent = 0
    while valid_sent < VALID or bad_sent < MALFORMED:
        if bad_sent < MALFORMED and (valid_sent >= VALID or rng.random() < MALFORMED / (MALFORMED + VALID)):
            kind, payload = malformed_payload(rng, template, marker)
            kinds[kind] += 1
            producer.produce(Topics.USAGE.value, value=payload, partition=rng.randrange(PARTITIONS))
            bad_sent += 1
        else:
            key = keys[valid_sent % len(keys)]
            event = usage_event(key, at=start, seconds=valid_sent * 0.5, project_id="proj_bad")
            producer.produce(Topics.USAGE.value, key=key.encode(), value=encode_usage_event(event))
            valid_per_key[key] += 1
            valid_sent += 1
        if (valid_sent + bad_sent) % 5_000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0

    app_id = f"keytrail-bad-{unique}"
    worker = KeytrailProcess("worker", {
        "KEYTRAIL_KAFKA_BOOTSTRAP": kafka_bootstrap, "KEYTRAIL_CLICKHOUSE_URL": f"chdb://{tmp_path / 'chdb'}",
        "KEYTRAIL_WORKER_APP_ID": app_id, "KEYTRAIL_USAGE_PARTITIONS": str(PARTITIONS),
        "KEYTRAIL_DATA_DIR": str(tmp_path)}, artifacts_dir / f"bad-input-worker-{unique}.log")
    with worker:
        wait_until(lambda: group_caught_up(kafka_bootstrap, app_id, Topics.USAGE.value), 600,
                   "the worker to get through the stream", worker.log_tail)
        assert worker.alive(), "the worker stopped on bad input:\n" + worker.log_tail()

    dead = [m for m in consume_all(kafka_bootstrap, Topics.DLQ.value, idle_seconds=3, max_seconds=120)
            if marker.encode() in m.value()]
    clickhouse = open_clickhouse(f"chdb://{tmp_path / 'chdb'}")
    try:
        stored = {r["key_id"]: int(r["n"]) for r in clickhouse.query(
            "SELECT key_id, count() AS n FROM usage_events FINAL WHERE key_id IN {k:Array(String)} GROUP BY key_id",
            {"k": keys})}
        counted = {r["key_id"]: int(r["n"]) for r in clickhouse.query(
            "SELECT key_id, sum(requests) AS n FROM key_usage_minute FINAL WHERE key_id IN {k:Array(String)} "
            "GROUP BY key_id", {"k": keys})}
    finally:
        clickhouse.close()
    return {"dead": dead, "kinds": kinds, "valid_per_key": dict(valid_per_key), "stored": stored, "counted": counted}


def test_ten_thousand_malformed_payloads_are_dead_lettered_with_a_reason(bad_input_run):
    dead = bad_input_run["dead"]
    assert sum(bad_input_run["kinds"].values()) == MALFORMED
    assert len(dead) == MALFORMED, f"{len(dead)} of {MALFORMED} malformed payloads reached the DLQ"
    headers = [dict(m.headers()) for m in dead]
    assert all(h.get("keytrail-reason") and h.get("keytrail-error-code") for h in headers)
    codes = Counter(h["keytrail-error-code"].decode() for h in headers)
    assert set(codes) <= {"bad_json", "schema_violation", "oversize_payload"}
    assert any(b"future" in h["keytrail-reason"] for h in headers)


def test_every_valid_event_mixed_with_bad_input_reaches_the_audit_trail(bad_input_run):
    assert bad_input_run["stored"] == bad_input_run["valid_per_key"]


def test_every_valid_event_mixed_with_bad_input_is_counted_in_its_minute(bad_input_run):
    assert bad_input_run["counted"] == bad_input_run["valid_per_key"]
