-- The audit trail and the per-key aggregates of the walking skeleton.
-- Every table is idempotent under re-insertion: ReplacingMergeTree on the natural key,
-- and readers use FINAL (or argMax) so a duplicate never changes an answer.

CREATE TABLE IF NOT EXISTS usage_events
(
    event_id        UUID,
    occurred_at     DateTime64(3, 'UTC'),
    key_id          String,
    project_id      LowCardinality(String),
    service         LowCardinality(String),
    method          LowCardinality(String),
    route           LowCardinality(String),
    status          UInt16,
    outcome         Enum8('ok' = 1, 'denied' = 2, 'invalid' = 3, 'expired' = 4, 'revoked' = 5,
                          'disabled' = 6, 'rate_limited' = 7, 'error' = 8),
    latency_ms      Float32 CODEC(ZSTD(1)),
    request_bytes   UInt64 CODEC(T64, ZSTD(1)),
    response_bytes  UInt64 CODEC(T64, ZSTD(1)),
    client_ip       IPv6,
    user_agent      LowCardinality(String),
    request_id      String CODEC(ZSTD(3)),
    on_time         UInt8 DEFAULT 1 COMMENT '0 when the event arrived after the allowed lateness and was not counted'
)
ENGINE = ReplacingMergeTree(on_time)
PARTITION BY toDate(occurred_at)
ORDER BY (key_id, occurred_at, event_id)
TTL toDateTime(occurred_at) + INTERVAL 400 DAY
COMMENT 'Raw usage events, the audit trail; deduplicated by event_id (an on-time copy wins over a late one)';

CREATE TABLE IF NOT EXISTS key_usage_minute
(
    key_id          String,
    project_id      LowCardinality(String),
    minute          DateTime('UTC'),
    requests        UInt64,
    errors          UInt64,
    denials         UInt64,
    outcome_ok      UInt64,
    outcome_denied  UInt64,
    outcome_invalid UInt64,
    outcome_expired UInt64,
    outcome_revoked UInt64,
    outcome_disabled UInt64,
    outcome_rate_limited UInt64,
    outcome_error   UInt64,
    distinct_ips    UInt32,
    request_bytes   UInt64,
    response_bytes  UInt64,
    revision        UInt64 COMMENT 'events counted so far in this minute; the highest revision wins'
)
ENGINE = ReplacingMergeTree(revision)
PARTITION BY toDate(minute)
ORDER BY (key_id, minute)
TTL minute + INTERVAL 400 DAY
COMMENT 'Per key and minute of event time; rows are full values, re-sent when a late event lands';

CREATE TABLE IF NOT EXISTS key_last_used
(
    key_id          String,
    project_id      LowCardinality(String),
    last_used_at    DateTime64(3, 'UTC'),
    last_used_ip    IPv6,
    route           LowCardinality(String),
    service         LowCardinality(String),
    event_id        UUID
)
ENGINE = ReplacingMergeTree(last_used_at)
ORDER BY key_id
COMMENT 'Newest use of each key by event time; an older event never wins';

CREATE TABLE IF NOT EXISTS signals
(
    signal_id       UUID,
    key_id          String,
    project_id      LowCardinality(String),
    kind            LowCardinality(String),
    severity        Enum8('info' = 0, 'low' = 1, 'medium' = 2, 'high' = 3, 'critical' = 4),
    score           Float64,
    observed        Float64,
    expected        Float64,
    window_start    DateTime64(3, 'UTC'),
    window_end      DateTime64(3, 'UTC'),
    detected_at     DateTime64(3, 'UTC'),
    evidence        String COMMENT 'JSON object of lists: ips, networks, routes, ...',
    message         String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (key_id, signal_id)
COMMENT 'Explained findings per key; the deterministic signal_id makes re-detection idempotent (replay included)';
