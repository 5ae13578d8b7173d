"""ClickHouseFeedbackSource on a real chDB: new rows once each, notified marks not twice, a failing read
leaves the batch untaught instead of stopping it."""

from __future__ import annotations

import logging

from keytrail.sql.backends import open_clickhouse
from keytrail.sql.migrate import migrate
from keytrail.stream_processors.detectors.feedback import DetectorFeedback
from keytrail.stream_processors.detectors.teaching import MarkedExpected
from keytrail.stream_processors.feedback_store import ClickHouseFeedbackSource, FeedbackStore, feedback_id_for


def _mark(n: int) -> MarkedExpected:
    signal_id = f"00000000-0000-0000-0000-{n:012d}"
    feedback = DetectorFeedback(key_id="key_s", project_id="proj_s", kind="new_network", signal_id=signal_id,
                                window_start_ms=1_700_000_000_000, window_end_ms=1_700_003_600_000,
                                evidence={"ips": ("203.0.113.7",)}, actor="t", marked_at_ms=1_700_010_000_000)
    return MarkedExpected(feedback_id_for("proj_s", signal_id), 1_700_005_000_000, feedback)


def test_new_marks_are_read_once_and_a_failed_read_is_retried(tmp_path, caplog):
    backend = open_clickhouse(f"chdb://{tmp_path / 'ch'}")
    try:
        source = ClickHouseFeedbackSource(backend)
        with caplog.at_level(logging.WARNING):
            assert source.read_new() == []  # not migrated yet: the table is missing
        assert "could not read new marks" in caplog.text
        migrate(backend)
        store = FeedbackStore(backend)
        first = _mark(1)
        store.save(first, "", "because")
        (read,) = source.read_new()
        assert read == first
        assert source.read_new() == []  # returned once
        second = _mark(2)
        source.notify(second)
        store.save(second, "", "")
        assert source.read_new() == [second]  # the notified mark, not again from the table
        assert source.read_new() == []
    finally:
        backend.close()
