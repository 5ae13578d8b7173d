"""Feedback through the production worker: a mark made with the CLI between two worker runs teaches the
worker's key state (a Faust table), and the marked key stays quiet where the other key signals again."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson
import pytest
from confluent_kafka import Producer

from keytrail.schemas.codec import encode_usage_event
from keytrail.schemas.topics import Topics
from keytrail.sql.backends import open_clickhouse
from keytrail.stream_processors.topics_admin import ensure_topics
from tests.e2e.pipeline_processes import KeytrailProcess, group_caught_up, wait_until
from tests.embedded.feedback_scenario import (
    AGAIN_PUBLIC_IP,
    day_zero,
    first_public_use,
    renumbered_then_public_again,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTITIONS = 2


def _produce(bootstrap: str, events) -> None:  # noqa: ANN001
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                         "partitioner": "murmur2_random"})
    for event in events:
        producer.produce(Topics.USAGE.value, value=encode_usage_event(event), key=event.key_id.encode())
    assert producer.flush(30) == 0


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "keytrail.console.cli", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120)


def test_a_cli_mark_teaches_the_workers_state(kafka_bootstrap, tmp_path, unique, artifacts_dir):
    ensure_topics(kafka_bootstrap, PARTITIONS)
    project = f"proj_wf_{unique}"
    key_a, key_b = f"key_wfa{unique}", f"key_wfb{unique}"
    start = day_zero()
    env = {"KEYTRAIL_KAFKA_BOOTSTRAP": kafka_bootstrap, "KEYTRAIL_CLICKHOUSE_URL": f"chdb://{tmp_path / 'chdb'}",
           "KEYTRAIL_KEYSTORE_URL": f"sqlite:///{tmp_path / 'keys.db'}", "KEYTRAIL_DATA_DIR": str(tmp_path),
           "KEYTRAIL_WORKER_APP_ID": f"keytrail-wf-{unique}", "KEYTRAIL_USAGE_PARTITIONS": str(PARTITIONS),
           "KEYTRAIL_WORKER_BATCH_SECONDS": "0.2"}
    app_id = env["KEYTRAIL_WORKER_APP_ID"]

    def run_worker_until_caught_up(name: str) -> None:
        worker = KeytrailProcess("worker", env, artifacts_dir / f"worker-feedback-{name}-{unique}.log")
        with worker:
            wait_until(lambda: group_caught_up(kafka_bootstrap, app_id, Topics.USAGE.value), 120,
                       f"the worker ({name}) to commit every usage event", worker.log_tail)

    _produce(kafka_bootstrap, first_public_use(key_a, project, start) + first_public_use(key_b, project, start))
    run_worker_until_caught_up("first")

    listed = _cli(env, "signals", "list", "--json", "--since", "60d", "--kind", "new_network", "--key", key_a)
    assert listed.returncode == 0, listed.stderr
    (signal,) = orjson.loads(listed.stdout)
    marked = _cli(env, "signals", "mark-expected", signal["signal_id"], "--reason", "vendor VPN", "--json")
    assert marked.returncode == 0, marked.stderr + marked.stdout
    assert orjson.loads(marked.stdout)["marks"][0]["learnt_by"] == "new_network"

    _produce(kafka_bootstrap, renumbered_then_public_again(key_a, project, start)
             + renumbered_then_public_again(key_b, project, start))
    run_worker_until_caught_up("second")

    clickhouse = open_clickhouse(env["KEYTRAIL_CLICKHOUSE_URL"])
    try:
        rows = clickhouse.query(
            "SELECT key_id, evidence FROM signals FINAL WHERE kind = 'new_network' AND has({k:Array(String)}, key_id) "
            "ORDER BY key_id, window_start", {"k": [key_a, key_b]})
        audit = clickhouse.query("SELECT actor FROM key_lifecycle_events FINAL WHERE key_id = {k:String} "
                                 "AND action = 'marked_expected'", {"k": key_a})
    finally:
        clickhouse.close()
    again = [(r["key_id"], orjson.loads(r["evidence"])["ips"]) for r in rows
             if AGAIN_PUBLIC_IP in orjson.loads(r["evidence"])["ips"]]
    assert again == [(key_b, [AGAIN_PUBLIC_IP])]
    assert len(audit) == 1
