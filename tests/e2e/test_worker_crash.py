"""Crash safety on real Kafka + Postgres + chDB: kill -9 the worker mid-stream, restart it,
and every count, per-minute frequency and last_used_at equals the ground truth; with the stream
sent as single-event records and as the SDK's envelopes (some envelopes re-sent)."""

from __future__ import annotations

import random
import uuid
from collections import Counter
from datetime import timedelta

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from keytrail.keystore.store import KeyStore
from keytrail.producers.envelopes import pack
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
    start_group_at_the_end,
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


def send_as_envelopes(producer: Producer, payloads: list[tuple[bytes, bytes]], rng: random.Random) -> int:
    """The events grouped per partition into envelopes of up to 500, as the SDK sends them, some
    envelopes sent twice (at least once); returns the records produced."""
    sent = 0
    for envelope in pack(payloads, PARTITIONS):
        for _copy in range(2 if rng.random() < 0.05 else 1):
            producer.produce(Topics.USAGE.value, key=envelope.key, value=envelope.value,
                             partition=envelope.partition, headers=envelope.headers)
            sent += 1
        producer.poll(0)
    return sent


@pytest.mark.parametrize("envelopes", [False, True], ids=["single-records", "envelopes"])
def test_kill_dash_nine_mid_stream_loses_nothing_and_double_counts_nothing(
    kafka_bootstrap, postgres_url, tmp_path, unique, artifacts_dir, envelopes
):
    ensure_topics(kafka_bootstrap, PARTITIONS)
    app_id = f"keytrail-crash-{unique}"
    already = start_group_at_the_end(kafka_bootstrap, app_id, Topics.USAGE.value, PARTITIONS)  # earlier tests' records
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
    payloads: list[tuple[bytes, bytes]] = []
    for index in range(EVENTS):
        key = keys[rng.randrange(KEYS)]
        event = usage_event(key, at=start, seconds=index * 0.05, project_id="proj_crash",
                            client_ip=f"10.{rng.randrange(4)}.0.{rng.randrange(1, 200)}",
                            event_id=uuid.UUID(int=rng.getrandbits(128), version=4))
        payload = encode_usage_event(event)
        copies = 2 if index % 100 == 0 else 1  # at-least-once producers resend: duplicates must not count
        if envelopes:
            payloads += [(key.encode(), payload)] * copies
        else:
            for _copy in range(copies):
                producer.produce(Topics.USAGE.value, key=key.encode(), value=payload)
                sent += 1
        t = epoch_ms(event.occurred_at)
        truth_minutes[(key, t // 60_000 * 60)] += 1
        truth_last[key] = max(truth_last.get(key, 0), t)
        if index % 10_000 == 0:
            producer.poll(0)
    if envelopes:
        sent = send_as_envelopes(producer, payloads, rng)
    assert producer.flush(60) == 0

    env = {"KEYTRAIL_KAFKA_BOOTSTRAP": kafka_bootstrap, "KEYTRAIL_CLICKHOUSE_URL": f"chdb://{tmp_path / 'chdb'}",
           "KEYTRAIL_WORKER_APP_ID": app_id, "KEYTRAIL_USAGE_PARTITIONS": str(PARTITIONS),
           "KEYTRAIL_DATA_DIR": str(tmp_path), "KEYTRAIL_WORKER_BATCH_SIZE": "2000",
           "KEYTRAIL_WORKER_BATCH_EVENTS": "2000"}  # many batches either way, so the kill lands mid-stream
    projector = KeytrailProcess("projector", {
        "KEYTRAIL_KAFKA_BOOTSTRAP": kafka_bootstrap, "KEYTRAIL_KEYSTORE_URL": postgres_url, "KEYTRAIL_SECRET": SECRET,
        "KEYTRAIL_PROJECTOR_GROUP_ID": f"{app_id}-projector", "KEYTRAIL_DATA_DIR": str(tmp_path)},
        artifacts_dir / f"crash-projector-{unique}.log")
    first = KeytrailProcess("worker", env, artifacts_dir / f"crash-worker-1-{unique}.log")
    second = KeytrailProcess("worker", env, artifacts_dir / f"crash-worker-2-{unique}.log")
    with projector:
        with first:
            wait_until(lambda: committed_total(kafka_bootstrap, app_id) - already > sent // 3, 600,
                       "the first worker to get a third of the way", first.log_tail)
            first.kill_hard()
        assert committed_total(kafka_bootstrap, app_id) - already < sent, "the first worker finished before the kill"
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
