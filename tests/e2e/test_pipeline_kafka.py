"""The walking skeleton end to end on real services:
confluent-kafka producer -> keytrail.usage.v1 -> Faust worker (chDB) -> keytrail.last-used.v1
-> projector -> key store (SQLite and PostgreSQL)."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import timedelta

import orjson
import pytest
from confluent_kafka import Producer

from keytrail.keystore.store import KeyStore
from keytrail.keystore.tables import api_keys
from keytrail.schemas.codec import encode_usage_event
from keytrail.schemas.timestamps import utc_now
from keytrail.schemas.topics import Topics
from keytrail.sql.backends import open_clickhouse
from keytrail.stream_processors.core.clock import epoch_ms
from keytrail.stream_processors.topics_admin import ensure_topics
from tests.e2e.pipeline_processes import (
    KeytrailProcess,
    consume_all,
    group_caught_up,
    wait_until,
)
from tests.factories import usage_event

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTITIONS = 4
SECRET = "e2e-test-secret-at-least-16-bytes"


def _produce(bootstrap: str, records: list[tuple[str | None, bytes, int | None]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                         "partitioner": "murmur2_random"})
    for key, value, partition in records:
        kwargs = {"partition": partition} if partition is not None else {}
        producer.produce(Topics.USAGE.value, value=value, key=key.encode() if key else None, **kwargs)
    assert producer.flush(30) == 0, "producer could not deliver every test event"


def _copy_key_rows(source: KeyStore, target: KeyStore, key_ids: list[str]) -> None:
    """The same keys in both stores, so one event stream can be projected into each."""
    with source.engine.connect() as read:
        rows = read.execute(api_keys.select().where(api_keys.c.id.in_(key_ids))).mappings().all()
    with target.engine.begin() as write:
        write.execute(api_keys.insert(), [dict(row) for row in rows])


def test_events_flow_from_kafka_to_clickhouse_and_key_store(
    kafka_bootstrap, postgres_url, tmp_path, unique, artifacts_dir
):
    ensure_topics(kafka_bootstrap, PARTITIONS)
    sqlite_url = f"sqlite:///{tmp_path / 'keys.db'}"
    stores = {"sqlite": KeyStore.open(sqlite_url, SECRET.encode()), "postgres": KeyStore.open(postgres_url, SECRET.encode())}
    key_a, _ = stores["sqlite"].create_key(f"e2e-a-{unique}", "proj_e2e")
    key_b, _ = stores["sqlite"].create_key(f"e2e-b-{unique}", "proj_e2e")
    _copy_key_rows(stores["sqlite"], stores["postgres"], [key_a.id, key_b.id])

    start = utc_now().replace(second=0, microsecond=0) - timedelta(minutes=30)
    a_events = [usage_event(key_a.id, at=start, seconds=60 * i + 5, project_id="proj_e2e",
                            client_ip=f"10.9.0.{i}") for i in range(10)]
    b_events = [usage_event(key_b.id, at=start, seconds=30 * i + 1, project_id="proj_e2e") for i in range(5)]
    newest_a = a_events[-1]
    late_a = usage_event(key_a.id, at=start, seconds=60 * 8 + 50, project_id="proj_e2e", client_ip="10.66.0.1")
    records: list[tuple[str | None, bytes, int | None]] = []
    records += [(key_a.id, encode_usage_event(e), 0) for e in a_events]
    records += [(key_a.id, encode_usage_event(a_events[3]), 0)]  # duplicate event_id
    records += [(key_a.id, encode_usage_event(late_a), 0)]  # older than the newest: counted, never moves last used
    records += [(key_b.id, encode_usage_event(e), PARTITIONS - 1) for e in b_events]
    marker = f"dlq-{unique}"
    bad_payloads = {
        "bad_json": b'{"event_id": "' + marker.encode() + b'", not json',
        "wrong_type": orjson.dumps({**orjson.loads(encode_usage_event(b_events[0])), "status": "OK",
                                    "request_id": marker, "event_id": str(uuid.uuid4())}),
        "unknown_field": orjson.dumps({**orjson.loads(encode_usage_event(b_events[0])), "surprise": marker,
                                       "event_id": str(uuid.uuid4())}),
    }
    records += [(None, payload, 1) for payload in bad_payloads.values()]
    _produce(kafka_bootstrap, records)

    app_id = f"keytrail-e2e-{unique}"
    chdb_dir = tmp_path / "chdb"
    worker_env = {"KEYTRAIL_KAFKA_BOOTSTRAP": kafka_bootstrap, "KEYTRAIL_CLICKHOUSE_URL": f"chdb://{chdb_dir}",
                  "KEYTRAIL_WORKER_APP_ID": app_id, "KEYTRAIL_USAGE_PARTITIONS": str(PARTITIONS),
                  "KEYTRAIL_WORKER_BATCH_SECONDS": "0.2", "KEYTRAIL_DATA_DIR": str(tmp_path)}
    worker = KeytrailProcess("worker", worker_env, artifacts_dir / f"e2e-worker-{unique}.log")
    projectors = {
        name: KeytrailProcess("projector", {
            "KEYTRAIL_KAFKA_BOOTSTRAP": kafka_bootstrap, "KEYTRAIL_KEYSTORE_URL": url,
            "KEYTRAIL_SECRET": SECRET, "KEYTRAIL_PROJECTOR_GROUP_ID": f"{app_id}-projector-{name}",
            "KEYTRAIL_DATA_DIR": str(tmp_path)}, artifacts_dir / f"e2e-projector-{name}-{unique}.log")
        for name, url in (("sqlite", sqlite_url), ("postgres", postgres_url))
    }
    with worker, projectors["sqlite"], projectors["postgres"]:
        def diagnostics() -> str:
            return "\n--- worker ---\n" + worker.log_tail() + "".join(
                f"\n--- projector {n} ---\n" + p.log_tail() for n, p in projectors.items())

        for name, store in stores.items():
            wait_until(lambda store=store: store.get(key_a.id).last_used_at == newest_a.occurred_at
                       and store.get(key_b.id).last_used_at == b_events[-1].occurred_at,
                       90, f"last_used_at in the {name} key store", diagnostics)
        wait_until(lambda: group_caught_up(kafka_bootstrap, app_id, Topics.USAGE.value), 60,
                   "the worker to commit every usage event", diagnostics)
        assert worker.alive(), "the worker stopped after bad input:\n" + diagnostics()

    dead = [m for m in consume_all(kafka_bootstrap, Topics.DLQ.value) if marker.encode() in m.value()]
    assert len(dead) == 3, f"expected the 3 invalid payloads in the DLQ, got {len(dead)}"
    reasons = [dict(m.headers())["keytrail-reason"].decode() for m in dead]
    assert all(reasons), reasons
    assert any("surprise" in r for r in reasons) and any("status" in r for r in reasons)
    assert any("JSON" in r for r in reasons)

    for name, store in stores.items():
        a = store.get(key_a.id)
        assert a.last_used_at == newest_a.occurred_at, name
        assert a.last_used_ip == newest_a.client_ip, name

    clickhouse = open_clickhouse(f"chdb://{chdb_dir}")
    try:
        counts = {r["key_id"]: int(r["n"]) for r in clickhouse.query(
            "SELECT key_id, count() AS n FROM usage_events FINAL WHERE key_id IN {k:Array(String)} GROUP BY key_id",
            {"k": [key_a.id, key_b.id]})}
        assert counts == {key_a.id: 11, key_b.id: 5}
        minutes = clickhouse.query(
            "SELECT key_id, toUnixTimestamp(minute) AS m, requests FROM key_usage_minute FINAL "
            "WHERE key_id IN {k:Array(String)} ORDER BY key_id, m", {"k": [key_a.id, key_b.id]})
        got = Counter({(r["key_id"], int(r["m"])): int(r["requests"]) for r in minutes})
        expected = Counter((e.key_id, epoch_ms(e.occurred_at) // 60_000 * 60) for e in [*a_events, late_a, *b_events])
        assert got == expected
        (last_used,) = clickhouse.query(
            "SELECT toUnixTimestamp64Milli(last_used_at) AS t FROM key_last_used FINAL WHERE key_id = {k:String}",
            {"k": key_a.id})
        assert int(last_used["t"]) == epoch_ms(newest_a.occurred_at)
    finally:
        clickhouse.close()
        for store in stores.values():
            store.close()
