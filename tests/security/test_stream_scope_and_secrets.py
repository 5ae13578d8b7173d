"""The Kafka worker holds the same lines as the HTTP ingest (real broker, real worker process,
real chDB, real SQLite key store):
- an event naming another project's key goes to the DLQ with `key_not_in_project`, is not stored
  and raises nothing on that key;
- a secret in any string field is redacted before it is stored, the event is still counted, and a
  `secret_exposed` signal names the key and the field;
- a refused payload holding another vendor's secret reaches the DLQ with the secret redacted."""

from __future__ import annotations

import uuid
from datetime import timedelta

import orjson
import pytest
from confluent_kafka import Producer

from keytrail.keystore.store import KeyStore
from keytrail.schemas.codec import encode_usage_event
from keytrail.schemas.timestamps import utc_now
from keytrail.schemas.topics import Topics
from keytrail.sql.backends import open_clickhouse
from keytrail.stream_processors.topics_admin import ensure_topics
from tests.e2e.pipeline_processes import KeytrailProcess, consume_all, group_caught_up, wait_until
from tests.factories import usage_event

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTITIONS = 4
AWS_KEY = "AKIAIOSFODNN7EXAMPLQ"
GITHUB_TOKEN = "ghp_" + "x7Kq2Lm9Pz4Rt6Vw8Yb1Nc3Df5Gh7Jk9Lm2Q"


@pytest.fixture(scope="module")
def stream_run(kafka_bootstrap, tmp_path_factory, artifacts_dir):
    tmp_path = tmp_path_factory.mktemp("stream-scope")
    unique = uuid.uuid4().hex[:10]
    keystore_url = f"sqlite:///{tmp_path / 'keys.db'}"
    with KeyStore.open(keystore_url, b"stream-scope-test-secret-0123456789") as store:
        key_a, _ = store.create_key("service a", f"proj-a-{unique}")
        key_b, _ = store.create_key("service b", f"proj-b-{unique}")
    project_a = key_a.project_id
    ensure_topics(kafka_bootstrap, PARTITIONS)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "partitioner": "murmur2_random",
                         "enable.idempotence": True, "linger.ms": 10})
    start = utc_now() - timedelta(minutes=30)
    marker = f"scope-{unique}"

    def send(key_id: str, project_id: str, n: int, **fields) -> None:
        event = usage_event(key_id, at=start, seconds=n, project_id=project_id, request_id=f"{marker}-{n}", **fields)
        producer.produce(Topics.USAGE.value, key=key_id.encode(), value=encode_usage_event(event))

    for n in range(100):
        send(key_a.id, project_a, n)  # its own key: counted
    for n in range(100, 140):
        send(key_b.id, project_a, n)  # project A naming project B's key: refused
    send(key_a.id, project_a, 200, user_agent=f"deploy-bot token={GITHUB_TOKEN}")
    send(key_a.id, project_a, 201, route=f"/v1/hooks/{AWS_KEY}")
    broken = orjson.dumps({"request_id": marker, "key_id": key_a.id, "leak": AWS_KEY, "status": "x"})
    producer.produce(Topics.USAGE.value, value=broken)
    assert producer.flush(60) == 0

    app_id = f"keytrail-scope-{unique}"
    worker = KeytrailProcess("worker", {
        "KEYTRAIL_KAFKA_BOOTSTRAP": kafka_bootstrap, "KEYTRAIL_CLICKHOUSE_URL": f"chdb://{tmp_path / 'chdb'}",
        "KEYTRAIL_WORKER_APP_ID": app_id, "KEYTRAIL_USAGE_PARTITIONS": str(PARTITIONS),
        "KEYTRAIL_KEYSTORE_URL": keystore_url, "KEYTRAIL_DATA_DIR": str(tmp_path)},
        artifacts_dir / f"stream-scope-worker-{unique}.log")
    with worker:
        wait_until(lambda: group_caught_up(kafka_bootstrap, app_id, Topics.USAGE.value), 600,
                   "the worker to get through the stream", worker.log_tail)
        assert worker.alive(), worker.log_tail()
    log_text = worker.log_path.read_text(errors="replace")
    dead = [m for m in consume_all(kafka_bootstrap, Topics.DLQ.value, idle_seconds=3, max_seconds=120)
            if marker.encode() in m.value()]
    clickhouse = open_clickhouse(f"chdb://{tmp_path / 'chdb'}")
    try:
        keys = [key_a.id, key_b.id]
        stored = clickhouse.query(
            "SELECT key_id, project_id, route, user_agent, request_id FROM usage_events FINAL "
            "WHERE key_id IN {k:Array(String)}", {"k": keys})
        counted = {r["key_id"]: int(r["n"]) for r in clickhouse.query(
            "SELECT key_id, sum(requests) AS n FROM key_usage_minute FINAL WHERE key_id IN {k:Array(String)} "
            "GROUP BY key_id", {"k": keys})}
        signals = clickhouse.query("SELECT key_id, kind, evidence, message FROM signals FINAL "
                                   "WHERE key_id IN {k:Array(String)}", {"k": keys})
        every_table = {
            table: clickhouse.query(f"SELECT * FROM {table}")  # noqa: S608 - fixed table names
            for table in ("usage_events", "key_usage_minute", "signals", "key_last_used")
        }
    finally:
        clickhouse.close()
    return {"a": key_a, "b": key_b, "dead": dead, "stored": stored, "counted": counted, "signals": signals,
            "tables": every_table, "log": log_text}


def test_another_projects_key_is_dead_lettered_not_counted(stream_run):
    b = stream_run["b"].id
    refused = [m for m in stream_run["dead"] if dict(m.headers()).get("keytrail-error-code") == b"key_not_in_project"]
    assert len(refused) == 40, f"{len(refused)} of 40 cross-project events reached the DLQ with their code"
    assert all(stream_run["b"].project_id.encode() not in dict(m.headers())["keytrail-reason"] for m in refused), \
        "the reason never names the owning project"
    assert [r for r in stream_run["stored"] if r["key_id"] == b] == []
    assert b not in stream_run["counted"]
    assert [s for s in stream_run["signals"] if s["key_id"] == b] == []


def test_secrets_in_fields_are_redacted_counted_and_signalled(stream_run):
    a = stream_run["a"].id
    assert stream_run["counted"][a] == 102, "events with a redacted secret are still counted"
    for rows in stream_run["tables"].values():
        text = repr(rows)
        assert GITHUB_TOKEN not in text and AWS_KEY not in text
    redacted = [r for r in stream_run["stored"] if "[REDACTED:" in r["user_agent"] + r["route"]]
    assert len(redacted) == 2
    exposed = [s for s in stream_run["signals"] if s["kind"] == "secret_exposed"]
    assert {field for s in exposed for field in orjson.loads(s["evidence"])["fields"]} == {"user_agent", "route"}
    assert all(GITHUB_TOKEN not in s["message"] and AWS_KEY not in s["message"] for s in exposed)
    assert GITHUB_TOKEN not in stream_run["log"] and AWS_KEY not in stream_run["log"]


def test_a_refused_payload_is_dead_lettered_with_its_secret_redacted(stream_run):
    broken = [m for m in stream_run["dead"] if b'"leak"' in m.value()]
    assert len(broken) == 1
    assert AWS_KEY.encode() not in broken[0].value() and b"[REDACTED:" in broken[0].value()
    assert all(AWS_KEY.encode() not in value for _, value in broken[0].headers())
