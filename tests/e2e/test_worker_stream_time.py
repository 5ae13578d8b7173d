"""The worker keeps stream time per partition: other keys moving the partition's watermark close a
quiet key's minute (issue 18), on a real Kafka broker with the real worker process."""

from __future__ import annotations

from datetime import timedelta

import pytest
from confluent_kafka import Producer

from keytrail.keystore.store import KeyStore
from keytrail.schemas.codec import encode_usage_event
from keytrail.schemas.partitioning import partition_for
from keytrail.schemas.timestamps import utc_now
from keytrail.schemas.topics import Topics
from keytrail.settings import Settings
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

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTITIONS = 4
"""As the other end-to-end tests: the session shares one broker, whose topics keep the count they were made with."""


def _produce(bootstrap: str, events, partition: int = 0) -> None:  # noqa: ANN001
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    for event in events:  # one partition for all: they share its watermark
        producer.produce(Topics.USAGE.value, value=encode_usage_event(event), key=event.key_id.encode(),
                         partition=partition)
    assert producer.flush(30) == 0


def test_a_quiet_keys_minute_closes_when_other_keys_move_the_partitions_watermark(
    kafka_bootstrap, tmp_path, unique, artifacts_dir
):
    ensure_topics(kafka_bootstrap, PARTITIONS)
    start = utc_now().replace(second=0, microsecond=0) - timedelta(minutes=40)
    quiet, busy = f"key_quiet{unique}", f"key_busy{unique}"
    first = [usage_event(quiet, at=start, seconds=s, project_id="proj_st") for s in (1, 2)]
    first += [usage_event(busy, at=start, seconds=600 + s, project_id="proj_st") for s in range(3)]
    same_minute = usage_event(quiet, at=start, seconds=5, project_id="proj_st")  # within the key's own lateness
    newer = usage_event(quiet, at=start, seconds=1200, project_id="proj_st")  # newer than anything it sent

    # A key of the worker's key store created three days before the events and never used.
    settings = Settings(data_dir=tmp_path, _env_file=None)
    store = KeyStore.open(settings.keystore_url, settings.hashing_secret(), env=settings.key_env,
                          clock=lambda: start - timedelta(days=3))
    try:
        never, _ = store.create_key("never-used", "proj_st")
    finally:
        store.close()
    never_partition = partition_for(never.id, PARTITIONS)
    ticker = usage_event(f"key_tick{unique}", at=start, seconds=900, project_id="proj_st")  # moves its watermark

    app_id = f"keytrail-st-{unique}"
    chdb_dir = tmp_path / "chdb"
    env = {"KEYTRAIL_KAFKA_BOOTSTRAP": kafka_bootstrap, "KEYTRAIL_CLICKHOUSE_URL": f"chdb://{chdb_dir}",
           "KEYTRAIL_WORKER_APP_ID": app_id, "KEYTRAIL_USAGE_PARTITIONS": str(PARTITIONS),
           "KEYTRAIL_WORKER_BATCH_SECONDS": "0.2", "KEYTRAIL_DATA_DIR": str(tmp_path),
           "KEYTRAIL_ALERT_NEVER_USED_DAYS": "1"}
    worker = KeytrailProcess("worker", env, artifacts_dir / f"stream-time-worker-{unique}.log")
    with worker:
        def diagnostics() -> str:
            return (describe_group_positions(kafka_bootstrap, app_id, Topics.USAGE.value)
                    + "\n--- worker ---\n" + worker.log_tail())

        _produce(kafka_bootstrap, first)
        _produce(kafka_bootstrap, [ticker], never_partition)
        wait_until(lambda: group_caught_up(kafka_bootstrap, app_id, Topics.USAGE.value), 120,
                   "the worker to process the first events", diagnostics)
        _produce(kafka_bootstrap, [same_minute, newer])
        wait_until(lambda: group_caught_up(kafka_bootstrap, app_id, Topics.USAGE.value), 60,
                   "the worker to process the later events", diagnostics)
        assert worker.alive(), diagnostics()

    clickhouse = open_clickhouse(f"chdb://{chdb_dir}")
    try:
        flags = {row["id"]: int(row["on_time"]) for row in clickhouse.query(
            "SELECT toString(event_id) AS id, on_time FROM usage_events FINAL WHERE key_id = {k:String}", {"k": quiet})}
        minutes = {int(row["m"]): int(row["requests"]) for row in clickhouse.query(
            "SELECT toUnixTimestamp(minute) AS m, requests FROM key_usage_minute FINAL WHERE key_id = {k:String}",
            {"k": quiet})}
        never_used = clickhouse.query(
            "SELECT kind, toUnixTimestamp64Milli(window_start) AS w, toUnixTimestamp64Milli(detected_at) AS d "
            "FROM signals FINAL WHERE key_id = {k:String}", {"k": never.id})
    finally:
        clickhouse.close()
    # The busy key moved partition 0's watermark past the quiet key's minute: it closed, its row is
    # final, and an event for it arrives late (audit trail, recounted) instead of reopening it.
    assert flags[str(same_minute.event_id)] == 0
    assert all(flags[str(e.event_id)] == 1 for e in first if e.key_id == quiet)
    assert flags[str(newer.event_id)] == 1  # the key's newest use is never late
    minute = epoch_ms(start) // 1000
    assert minutes[minute] == 3 and minutes[minute + 1200] == 1
    # The worker's watermark evaluated the key store in event time: never used, a day after creation.
    created = epoch_ms(start - timedelta(days=3))
    assert [(r["kind"], int(r["w"]), int(r["d"])) for r in never_used] == [("never_used", created, created + 86_400_000)]
