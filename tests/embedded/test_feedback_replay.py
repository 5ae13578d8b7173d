"""Replay with marks "expected": the same signals as the stream, the marked one included."""

from __future__ import annotations

from keytrail.console.embedded import EmbeddedPipeline
from keytrail.console.feedback import mark_signal_expected
from keytrail.keystore.caller import Caller
from keytrail.settings import Settings
from keytrail.stream_processors.detectors import default_detectors
from keytrail.stream_processors.replay import _phases, replay
from tests.embedded.feedback_scenario import day_zero, first_public_use, renumbered_then_public_again

SIGNALS = ("SELECT toString(signal_id) AS id, key_id, kind, toString(severity) AS severity, window_start, evidence, "
           "message FROM signals FINAL ORDER BY id")


def test_replay_teaches_marks_where_the_stream_did(tmp_path):
    start = day_zero()
    pipeline = EmbeddedPipeline(Settings(data_dir=tmp_path, _env_file=None), alerting=False)
    try:
        key_a = pipeline.keystore.create_key("a", "proj_rp")[0].id
        key_b = pipeline.keystore.create_key("b", "proj_rp")[0].id
        first = first_public_use(key_a, "proj_rp", start) + first_public_use(key_b, "proj_rp", start)
        for begin in range(0, len(first), 100):
            pipeline.ingest(first[begin : begin + 100])
        (signal,) = [s for s in pipeline.clickhouse.query(SIGNALS) if s["key_id"] == key_a and s["kind"] == "new_network"]
        stored, _ = mark_signal_expected(pipeline.clickhouse, pipeline.keystore, Caller.admin("t"), signal["id"])
        pipeline.feedback_source.notify(stored.mark)
        rest = renumbered_then_public_again(key_a, "proj_rp", start) + renumbered_then_public_again(key_b, "proj_rp", start)
        for begin in range(0, len(rest), 64):
            pipeline.ingest(rest[begin : begin + 64])
        streamed = pipeline.clickhouse.query(SIGNALS)
        again = [(s["key_id"], s["kind"]) for s in streamed if s["kind"] == "new_network"]
        assert sorted(again) == sorted([(key_a, "new_network"), (key_b, "new_network"), (key_b, "new_network")])

        replay(pipeline.clickhouse, None, allowed_lateness_s=pipeline.settings.allowed_lateness_seconds,
               detectors=default_detectors(), keys_per_chunk=1)
        assert pipeline.clickhouse.query(SIGNALS) == streamed
    finally:
        pipeline.close()


def test_phases_keep_each_keys_order_and_cut_after_the_mark():
    from tests.detectors.test_feedback_teaches import mark_of  # noqa: PLC0415
    from tests.factories import usage_event

    start = day_zero()
    events = [usage_event("key_a", at=start, seconds=s) for s in (0, 10, 20, 30)]
    events += [usage_event("key_b", at=start, seconds=s) for s in (5, 15)]
    events.sort(key=lambda e: (e.key_id, e.occurred_at))
    signal = type("S", (), {})  # only the fields mark_of reads
    signal.key_id, signal.project_id, signal.signal_id, signal.evidence = "key_a", "p", "s", {}
    signal.kind = type("K", (), {"value": "new_network"})
    signal.window_start = signal.window_end = start
    point = int(start.timestamp() * 1000) + 10_000
    phases = _phases(events, {"key_a": [mark_of(signal, point)]})
    assert [[(e.key_id, int(e.occurred_at.timestamp()) - int(start.timestamp())) for e in p] for _, p in phases] == [
        [("key_a", 0), ("key_a", 10), ("key_b", 5), ("key_b", 15)], [("key_a", 20), ("key_a", 30)]]
    assert [len(due) for due, _ in phases] == [0, 1]
