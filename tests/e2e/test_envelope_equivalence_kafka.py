"""The real worker on a real broker: a stream sent as single-event records and the same stream sent
as envelopes of random sizes mixed with single records and at-least-once re-sends give identical
rows in every table; a bad event inside an envelope reaches the DLQ with its reason and its
envelope's partition, offset and index, and its neighbours are counted."""

from __future__ import annotations

import random
import uuid

import orjson
import pytest
from confluent_kafka import Producer

from keytrail.schemas.envelope import encode_envelope, envelope_headers
from keytrail.schemas.topics import Topics
from keytrail.sql.backends import open_clickhouse
from keytrail.stream_processors.topics_admin import ensure_topics
from tests.e2e.pipeline_processes import (
    KeytrailProcess,
    consume_all,
    describe_group_positions,
    group_caught_up,
    start_group_at_the_end,
    wait_until,
)
from tests.sinks.split_runs import Record, every_table, random_records, singles, stream

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1200)]

PARTITIONS = 4
EVENTS = 3000


def produce(bootstrap: str, records: list[Record]) -> list[tuple[int, int]]:
    """Send the records in order, each to its partition (envelopes with their headers), as the SDK does;
    returns each record's (partition, offset)."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                         "linger.ms": 20, "compression.type": "zstd"})
    placed: dict[int, tuple[int, int]] = {}

    def delivered(index: int, error, message) -> None:
        assert error is None, error
        placed[index] = (message.partition(), message.offset())

    for index, record in enumerate(records):
        envelope = record.value.startswith(b'{"envelope_version"')
        producer.produce(Topics.USAGE.value, value=record.value, partition=record.partition,
                         key=orjson.loads(record.value)["events"][0]["key_id"].encode() if envelope else None,
                         headers=envelope_headers(record.events) if envelope else None,
                         on_delivery=lambda e, m, i=index: delivered(i, e, m))
        producer.poll(0)
    assert producer.flush(60) == 0
    return [placed[i] for i in range(len(records))]


def run_worker(kafka_bootstrap: str, tmp_path, artifacts_dir, name: str, records: list[Record]) -> dict:
    """One worker (its own consumer group and chDB) over exactly `records`; every table afterwards."""
    app_id = f"keytrail-eq-{name}"
    start_group_at_the_end(kafka_bootstrap, app_id, Topics.USAGE.value, PARTITIONS)
    positions = produce(kafka_bootstrap, records)
    data = tmp_path / name
    worker = KeytrailProcess("worker", {
        "KEYTRAIL_KAFKA_BOOTSTRAP": kafka_bootstrap, "KEYTRAIL_CLICKHOUSE_URL": f"chdb://{data / 'chdb'}",
        "KEYTRAIL_WORKER_APP_ID": app_id, "KEYTRAIL_USAGE_PARTITIONS": str(PARTITIONS),
        "KEYTRAIL_WORKER_BATCH_EVENTS": "400", "KEYTRAIL_WORKER_BATCH_SECONDS": "0.2",
        "KEYTRAIL_DATA_DIR": str(data)}, artifacts_dir / f"{app_id}.log")
    with worker:
        wait_until(lambda: group_caught_up(kafka_bootstrap, app_id, Topics.USAGE.value), 600,
                   f"the {name} worker to commit its records",
                   lambda: f"{describe_group_positions(kafka_bootstrap, app_id, Topics.USAGE.value)}\n"
                           f"{worker.log_tail()}")
        assert worker.alive(), worker.log_tail()
    clickhouse = open_clickhouse(f"chdb://{data / 'chdb'}")
    try:
        return {"tables": every_table(clickhouse, columns=SPLIT_INDEPENDENT_COLUMNS(clickhouse)), "positions": positions}
    finally:
        clickhouse.close()


def SPLIT_INDEPENDENT_COLUMNS(clickhouse) -> dict[str, list[str]]:  # noqa: N802 - a table of the comparison
    """What the real worker (with stream time) gives identically whatever its batch cuts.

    Known gap (tests/core/test_stream_time_splits.py, a strict xfail): an event for a minute its
    partition's watermark closed at the end of an earlier batch is late, the same event inside that
    batch is not. Counts stay exact (the minute is recounted from the audit trail), but the
    `on_time` flag of `usage_events`, and so what the detectors saw of that minute, depend on where
    this run's batches were cut. So `on_time` is left out, and signals are compared by id (key,
    kind, window), not by the wording of their evidence.
    """
    usage = [r["name"] for r in clickhouse.query(
        "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = 'usage_events'")
        if r["name"] != "on_time"]
    return {"usage_events": usage, "signals": ["signal_id", "key_id", "project_id", "kind"]}


def test_single_records_and_envelopes_with_resends_give_the_same_tables_and_a_bad_neighbour_is_dead_lettered(
    kafka_bootstrap, tmp_path, artifacts_dir, unique
):
    ensure_topics(kafka_bootstrap, PARTITIONS)
    events = stream(11, EVENTS, 12, prefix=f"key_eq_{unique}")
    reference = run_worker(kafka_bootstrap, tmp_path, artifacts_dir, f"{unique}-single",
                           singles(events, PARTITIONS))

    rng = random.Random(12)
    records = random_records(events, rng, 500, 0.3, PARTITIONS)
    # A bad event goes into the middle of the first envelope of several events: its neighbours are
    # first sightings, so the tables equal the reference only if they were counted.
    marker = f"bad-{unique}"
    at = next(i for i, r in enumerate(records) if r.events >= 2 and r.value.startswith(b'{"envelope_version"'))
    inside = [orjson.dumps(e) for e in orjson.loads(records[at].value)["events"]]
    bad = orjson.dumps({**orjson.loads(inside[0]), "event_id": str(uuid.uuid4()), "status": "OK",
                        "request_id": marker})
    middle = len(inside) // 2
    carrier = Record(records[at].partition, encode_envelope([*inside[:middle], bad, *inside[middle:]]),
                     len(inside) + 1)
    records[at] = carrier
    assert sum(r.value.startswith(b'{"envelope_version"') for r in records) > 1
    enveloped = run_worker(kafka_bootstrap, tmp_path, artifacts_dir, f"{unique}-envelopes", records)

    assert enveloped["tables"] == reference["tables"]
    assert reference["tables"]["usage_events"] and reference["tables"]["signals"]

    dead = [m for m in consume_all(kafka_bootstrap, Topics.DLQ.value, idle_seconds=3, max_seconds=60)
            if marker.encode() in m.value()]
    assert len(dead) == 1, f"{len(dead)} DLQ records carry the bad event"
    headers = {name: value.decode() for name, value in dead[0].headers()}
    carrier_partition, carrier_offset = enveloped["positions"][at]
    assert headers["keytrail-error-code"] == "schema_violation"
    assert "status" in headers["keytrail-reason"]
    assert (int(headers["keytrail-source-partition"]), int(headers["keytrail-source-offset"]),
            int(headers["keytrail-envelope-index"])) == (carrier_partition, carrier_offset, middle)
    assert orjson.loads(dead[0].value())["request_id"] == marker, "the DLQ holds the event's own bytes"
