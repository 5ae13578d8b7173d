"""The embedded default: the same core in-process with chDB and SQLite."""

from __future__ import annotations

import pytest

from keytrail.console.embedded import EmbeddedPipeline
from keytrail.settings import Settings
from keytrail.stream_processors.detectors import default_detectors
from keytrail.stream_processors.replay import replay
from tests.factories import usage_event


@pytest.fixture
def pipeline(tmp_path):
    pipe = EmbeddedPipeline(Settings(data_dir=tmp_path, _env_file=None))
    yield pipe
    pipe.close()


def _derived(pipe: EmbeddedPipeline, key_ids: list[str]) -> dict:
    q = pipe.clickhouse.query
    params = {"k": key_ids}
    return {
        "minutes": q("SELECT key_id, toString(minute) AS m, requests, errors, denials, distinct_ips "
                     "FROM key_usage_minute FINAL WHERE key_id IN {k:Array(String)} ORDER BY key_id, m", params),
        "last_used": q("SELECT key_id, toString(last_used_at) AS t, toString(last_used_ip) AS ip "
                       "FROM key_last_used FINAL WHERE key_id IN {k:Array(String)} ORDER BY key_id", params),
        "signals": q("SELECT toString(signal_id) AS id, kind, severity, score FROM signals FINAL "
                     "WHERE key_id IN {k:Array(String)} ORDER BY id", params),
        "key_store": [(k, pipe.keystore.get(k).last_used_at, pipe.keystore.get(k).last_used_ip) for k in key_ids],
    }


def test_replay_rebuilds_exactly_what_streaming_produced(pipeline):
    keys = [pipeline.keystore.create_key(f"replay-{i}", "proj_r")[0].id for i in range(3)]
    events = [usage_event(keys[i % 3], seconds=i * 7, project_id="proj_r", client_ip=f"10.0.{i % 4}.{i % 9}")
              for i in range(900)]
    events += [usage_event(keys[0], seconds=6200, project_id="proj_r")]  # older than the newest, within lateness
    for start in range(0, len(events), 128):
        pipeline.ingest(events[start : start + 128])
    pipeline.ingest(events[:50])  # a redelivered batch
    streamed = _derived(pipeline, keys)
    assert sum(int(r["requests"]) for r in streamed["minutes"]) == 901

    report = replay(pipeline.clickhouse, pipeline.keystore, allowed_lateness_s=pipeline.settings.allowed_lateness_seconds,
                    detectors=default_detectors(), keys_per_chunk=2)
    assert report.events == 901 and report.keys == 3
    assert _derived(pipeline, keys) == streamed


def test_admin_actions_reach_the_clickhouse_audit_trail(pipeline):
    record, secret = pipeline.keystore.create_key("audited", "proj_a", actor="alice@example.com")
    pipeline.keystore.revoke(record.id, actor="bob@example.com", reason="leaked in a ticket")
    rows = pipeline.clickhouse.query(
        "SELECT action, actor, reason, after FROM key_lifecycle_events FINAL WHERE key_id = {k:String} "
        "ORDER BY occurred_at, action", {"k": record.id})
    assert [(r["action"], r["actor"]) for r in rows] == [("created", "alice@example.com"), ("revoked", "bob@example.com")]
    assert rows[1]["reason"] == "leaked in a ticket"
    stored = "".join(r["after"] for r in rows)
    assert record.id in stored and secret not in stored and secret[8:-7] not in stored
