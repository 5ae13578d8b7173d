-- Detector feedback: a person marked a signal (or the alert built on it) as expected.
--
-- One row per (project, signal): marking the same signal again keeps the first mark (the writer
-- checks before inserting; a concurrent double insert carries the same feedback_id and collapses
-- here). The worker and the embedded ingest read new rows by inserted_at (filled by ClickHouse,
-- one clock for every writer) and teach the detector that raised the signal, for that key only.
-- applies_after is event time: the key's newest event when the mark was made. The teaching takes
-- effect before the key's first event after it, live and in a replay alike.
-- Not derived from the usage log (a replay keeps it): like the lifecycle log, it is a source.

CREATE TABLE IF NOT EXISTS detector_feedback
(
    feedback_id     String COMMENT 'deterministic: uuid5 of (project_id, signal_id)',
    project_id      LowCardinality(String),
    key_id          String,
    signal_id       String,
    alert_id        String DEFAULT '' COMMENT 'the alert the mark was made on, if any',
    kind            LowCardinality(String) COMMENT 'the signal kind; picks the detector that learns',
    window_start    DateTime64(3, 'UTC'),
    window_end      DateTime64(3, 'UTC'),
    evidence        String CODEC(ZSTD(3)) COMMENT 'the signal''s evidence, JSON object of lists',
    actor           String,
    reason          String CODEC(ZSTD(3)) COMMENT 'why it was expected; secrets redacted before storing',
    marked_at       DateTime64(3, 'UTC') COMMENT 'wall clock of the mark',
    applies_after   DateTime64(3, 'UTC') COMMENT 'event time: taught before the key''s first event after it',
    inserted_at     DateTime64(3, 'UTC') DEFAULT now64(3) COMMENT 'filled by ClickHouse; how readers find new rows'
)
ENGINE = ReplacingMergeTree
ORDER BY (project_id, key_id, feedback_id)
COMMENT 'Signals marked expected (who, when, why); read with FINAL. Kept without TTL';
