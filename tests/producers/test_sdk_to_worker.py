"""The SDK's envelopes through the real worker: KafkaEmitter (defaults) -> keytrail.usage.v1 ->
Faust worker -> chDB, every event counted once, in its own minute."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest

from keytrail.producers.kafka_emitter import KafkaEmitter
from keytrail.schemas.timestamps import utc_now
from keytrail.schemas.topics import Topics
from keytrail.sql.backends import open_clickhouse
from keytrail.stream_processors.core.clock import epoch_ms
from keytrail.stream_processors.topics_admin import ensure_topics
from tests.e2e.pipeline_processes import KeytrailProcess, group_caught_up, wait_until
from tests.factories import usage_event

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTITIONS = 4


def test_envelopes_from_the_sdk_are_counted_once_each_by_the_worker(
    kafka_bootstrap, tmp_path, unique, artifacts_dir
):
    ensure_topics(kafka_bootstrap, PARTITIONS)
    keys = [f"key_sdk{unique}_{n}" for n in range(30)]
    start = utc_now().replace(second=0, microsecond=0) - timedelta(minutes=20)
    events = [usage_event(keys[n % 30], at=start, seconds=n * 0.4, request_id=f"r{n}") for n in range(3000)]
    with KafkaEmitter(kafka_bootstrap, topic=Topics.USAGE.value, spool_dir=tmp_path / "spool") as emitter:
        assert emitter.envelopes
        for event in events:
            emitter.emit(event)
        for event in events[:100]:  # re-sent: the same event ids count once
            emitter.emit(event)
        assert emitter.flush(60) == 0
        records, carried = emitter.records
    assert carried == 3100 and records < 3100 / 20, "the events went out in envelopes"

    app_id = f"keytrail-sdk-{unique}"
    chdb_dir = tmp_path / "chdb"
    env = {
        "KEYTRAIL_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "KEYTRAIL_CLICKHOUSE_URL": f"chdb://{chdb_dir}",
        "KEYTRAIL_WORKER_APP_ID": app_id,
        "KEYTRAIL_USAGE_PARTITIONS": str(PARTITIONS),
        "KEYTRAIL_WORKER_BATCH_SECONDS": "0.2",
        "KEYTRAIL_DATA_DIR": str(tmp_path),
    }
    worker = KeytrailProcess("worker", env, artifacts_dir / f"sdk-worker-{unique}.log")
    with worker:
        wait_until(
            lambda: group_caught_up(kafka_bootstrap, app_id, Topics.USAGE.value),
            120,
            "the worker to commit every usage record",
            worker.log_tail,
        )
        assert worker.alive(), worker.log_tail()

    clickhouse = open_clickhouse(f"chdb://{chdb_dir}")
    try:
        rows = clickhouse.query(
            "SELECT key_id, count() AS n FROM usage_events FINAL WHERE key_id IN {k:Array(String)} GROUP BY key_id",
            {"k": keys},
        )
        assert {r["key_id"]: int(r["n"]) for r in rows} == {key: 100 for key in keys}
        minutes = clickhouse.query(
            "SELECT key_id, toUnixTimestamp(minute) AS m, requests FROM key_usage_minute FINAL "
            "WHERE key_id IN {k:Array(String)}",
            {"k": keys},
        )
        got = Counter({(r["key_id"], int(r["m"])): int(r["requests"]) for r in minutes})
        assert got == Counter((e.key_id, epoch_ms(e.occurred_at) // 60_000 * 60) for e in events)
    finally:
        clickhouse.close()
