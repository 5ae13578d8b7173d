-- Alerting: what the alert engine needs beyond the `alerts` table of 0002, and its delivery outbox.
--
-- Every alert change is a new row with a strictly later updated_at (the engine bumps it by at least
-- one millisecond per change), read with FINAL. Columns are added IF NOT EXISTS, so this migration
-- also applies cleanly when 0002 grows the same columns.

ALTER TABLE alerts ADD COLUMN IF NOT EXISTS dedupe_key String DEFAULT concat(rule, ':', key_id)
    COMMENT 'rule:key_id; at most one unresolved alert per dedupe key';
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS last_seen_at Nullable(DateTime64(3, 'UTC'))
    COMMENT 'when the condition was last observed (signal or scan)';
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS occurrences UInt32 DEFAULT 1
    COMMENT 'how many times the condition was observed while this alert was unresolved';
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS notify_round UInt32 DEFAULT 0
    COMMENT 'notifications sent so far; the delivery id is derived from (alert_id, round, channel)';
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS acknowledged_at Nullable(DateTime64(3, 'UTC'));
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS acknowledged_by String DEFAULT '';
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS resolved_by String DEFAULT '';
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS resolution String DEFAULT '' COMMENT 'why it was resolved, in words';
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS signal_ids Array(String) DEFAULT []
    COMMENT 'signals folded into this alert (newest last, bounded)';

CREATE TABLE IF NOT EXISTS alert_deliveries
(
    delivery_id   String COMMENT 'sent as X-KeyTrail-Delivery; the same on every retry and after a restart',
    alert_id      String,
    channel       LowCardinality(String),
    round         UInt32,
    state         Enum8('pending' = 1, 'sent' = 2, 'failed' = 3),
    attempts      UInt32,
    last_error    String CODEC(ZSTD(3)),
    created_at    DateTime64(3, 'UTC'),
    updated_at    DateTime64(3, 'UTC'),
    payload       String CODEC(ZSTD(3)) COMMENT 'the JSON body, kept so a restart resends exactly the same bytes'
)
ENGINE = ReplacingMergeTree(updated_at)
PARTITION BY toYYYYMM(created_at)
ORDER BY (delivery_id)
TTL toDateTime(created_at) + INTERVAL 400 DAY
COMMENT 'Alert delivery outbox and log: pending before sending, sent/failed after; read with FINAL';
