"""Crash safety on real Kafka + Postgres + chDB: kill -9 the worker mid-stream, restart it,
and every count, per-minute frequency and last_used_at equals the ground truth."""

from __future__ import annotations

import random
import uuid
from collections import Counter
from datetime import timedelta

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from keytrail.keystore.store import KeyStore
from keytrail.schemas.codec import encode_usage_event
from keytrail.schemas.timestamps import utc_now
from keytrail.schemas.topics import Topics
from keytrail.sql.backends import open_clickhouse
from keytrail.stream_processors.core.clock import epoch_ms
from keytrail.stream_processors.topics_admin import ensure_topics
from tests.e2e.pipeline_processes import (
    KeytrailProcess,
    describe_group_positions,
    group_caught_up,
    wait_until,
)
from tests.factories import usage_event

# The waits below add up to less than this, so a stall fails with diagnostics, not a bare timeout.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1200)]

PARTITIONS = 4
SECRET = "crash-test-secret-at-least-16-bytes"
EVENTS = 200_000
KEYS = 40


def committed_total(bootstrap: str, group_id: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group_id})
    try:
        try:
            tps = consumer.committed([TopicPartition(Topics.USAGE.value, p) for p in range(PARTITIONS)], timeout=10)
        except KafkaException:  # coordinator not ready yet: nothing known to be committed
            return 0
        return sum(max(tp.offset, 0) for tp in tps)
    finally:
        consumer.close()


def test_kill_dash_nine_mid_stream_loses_nothing_and_double_counts_nothing(
    kafka_bootstrap, postgres_url, tmp_path, unique, artifacts_dir
):
    ensure_topics(kafka_bootstrap, PARTITIONS)
    store = KeyStore.open(postgres_url, SECRET.encode())
    keys = [store.create_key(f"crash-{unique}-{i}", "proj_crash")[0].id for i in range(KEYS)]
    rng = random.Random(42)
    start = utc_now() - timedelta(hours=3)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "partitioner": "murmur2_random",
                         "linger.ms": 20, "compression.type": "lz4", "queue.buffering.max.messages": 500_000,
                         "enable.idempotence": True})
    truth_minutes: Counter[tuple[str, int]] = Counter()
    truth_last: dict[str, int] = {}
    sent = 0
    for index in range(EVENTS):
        key = keys[rng.randrange(KEYS)]
        event = usage_event(key, at=start, seconds=index * 0.05, project_id="proj_crash",
                            client_ip=f"10.{rng.randrange(4)}.0.{rng.randrange(1, 200)}",
                            event_id=uuid.UUID(int=rng.getrandbits(128), version=4))
        payload = encode_usage_event(event)
        producer.produce(Topics.USAGE.value, key=key.encode(), value=payload)
        sent += 1
        if index % 100 == 0:  # at-least-once producers resend: duplicates must not count
            producer.produce(Topics.USAGE.value, key=key.encode(), value=payload)
            sent += 1
        t = epoch_ms(event.occurred_at)
        truth_minutes[(key, t // 60_000 * 60)] += 1
        truth_last[key] = max(truth_last.get(key, 0), t)
        if index % 10_000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0

    app_id = f"keytrail-crash-{unique}"
    env = {"KEYTRAIL_KAFKA_BOOTSTRAP": kafka_bootstrap, "KEYTRAIL_CLICKHOUSE_URL": f"chdb://{tmp_path / 'chdb'}",
           "KEYTRAIL_WORKER_APP_ID": app_id, "KEYTRAIL_USAGE_PARTITIONS": str(PARTITIONS),
           "KEYTRAIL_DATA_DIR": str(tmp_path), "KEYTRAIL_WORKER_BATCH_SIZE": "2000"}
    projector = KeytrailProcess("projector", {
        "KEYTRAIL_KAFKA_BOOTSTRAP": kafka_bootstrap, "KEYTRAIL_KEYSTORE_URL": postgres_url, "KEYTRAIL_SECRET": SECRET,
        "KEYTRAIL_PROJECTOR_GROUP_ID": f"{app_id}-projector", "KEYTRAIL_DATA_DIR": str(tmp_path)},
        artifacts_dir / f"crash-projector-{unique}.log")
    first = KeytrailProcess("worker", env, artifacts_dir / f"crash-worker-1-{unique}.log")
    second = KeytrailProcess("worker", env, artifacts_dir / f"crash-worker-2-{unique}.log")
    with projector:
        with first:
            wait_until(lambda: committed_total(kafka_bootstrap, app_id) > sent // 3, 600,
                       "the first worker to get a third of the way", first.log_tail)
            first.kill_hard()
        with second:
            wait_until(lambda: group_caught_up(kafka_bootstrap, app_id, Topics.USAGE.value), 600,
                       "the restarted worker to catch up",
                       lambda: f"{describe_group_positions(kafka_bootstrap, app_id, Topics.USAGE.value)}\n"
                               f"{second.log_tail()}")
            wait_until(lambda: all(
                (r.last_used_at is not None and epoch_ms(r.last_used_at) == truth_last[r.id])
                for r in (store.get(k) for k in keys)), 120, "last_used_at of every key", projector.log_tail)

    clickhouse = open_clickhouse(f"chdb://{tmp_path / 'chdb'}")
    try:
        rows = clickhouse.query(
            "SELECT key_id, toUnixTimestamp(minute) AS m, requests FROM key_usage_minute FINAL "
            "WHERE key_id IN {k:Array(String)}", {"k": keys})
        got_minutes = Counter({(r["key_id"], int(r["m"])): int(r["requests"]) for r in rows})
        assert got_minutes == truth_minutes
        totals = {r["key_id"]: int(r["n"]) for r in clickhouse.query(
            "SELECT key_id, count() AS n FROM usage_events FINAL WHERE key_id IN {k:Array(String)} GROUP BY key_id",
            {"k": keys})}
        truth_totals = Counter()
        for (key, _minute), n in truth_minutes.items():
            truth_totals[key] += n
        assert totals == dict(truth_totals)
        assert sum(totals.values()) == EVENTS
        last = {r["key_id"]: int(r["t"]) for r in clickhouse.query(
            "SELECT key_id, toUnixTimestamp64Milli(last_used_at) AS t FROM key_last_used FINAL "
            "WHERE key_id IN {k:Array(String)}", {"k": keys})}
        assert last == truth_last
    finally:
        clickhouse.close()
        store.close()
