-- Rollups that keep every canned query within 50 ms over 10M events (bench/bench_queries.py).
--
-- 1. key_usage_hourly moves from day to month partitions. Windows span days to weeks, and a
--    read pays per partition touched (≈ 0.5-1 ms each in chDB, plus FINAL per partition): a
--    7-day read over day partitions touched 8, a 28-day one 29; over month partitions 1-2.
--    The table is rebuilt under a new name, filled from the old one and swapped in by RENAME;
--    its refreshable view is dropped first and recreated unchanged on the new table (a
--    materialized view keeps writing to the table it was created with, whatever its name).
-- 2. key_usage_hourly_clients: per key, hour, client address and user agent, the requests,
--    errors, denials and first/last seen of on-time events, each event counted once. The per-key
--    address, network and user-agent queries read whole settled hours from here (a key-hour is
--    ≈ 1-100 rows instead of up to thousands of events) and only the window's partial edge
--    hours, the key-hours written since their last refresh, and late events from usage_events,
--    so answers stay identical to the raw events' at any moment. Recomputed, like the hourly
--    rollup, for exactly the key-hours whose minutes were written since its last refresh, from
--    deduplicated events; the newest computation of a row replaces the older one (sets of
--    addresses and agents of a key-hour only grow, so no stale row outlives a recomputation).
-- 3. The daily rollup refreshes every minute (was five), so multi-day windows can read whole
--    days from it with the same freshness as the hourly one.

DROP VIEW IF EXISTS key_usage_hourly_refresh;

CREATE TABLE IF NOT EXISTS key_usage_hourly_next
(
    key_id               String,
    hour                 DateTime('UTC'),
    project_id           LowCardinality(String),
    requests             UInt64,
    errors               UInt64,
    denials              UInt64,
    outcome_ok           UInt64,
    outcome_denied       UInt64,
    outcome_invalid      UInt64,
    outcome_expired      UInt64,
    outcome_revoked      UInt64,
    outcome_disabled     UInt64,
    outcome_rate_limited UInt64,
    outcome_error        UInt64,
    request_bytes        UInt64,
    response_bytes       UInt64,
    active_minutes       UInt16,
    ips_seen             Array(IPv6) CODEC(ZSTD(1)) COMMENT 'distinct client addresses of the hour (on-time events)',
    networks_seen        Array(IPv6) CODEC(ZSTD(1)) COMMENT 'distinct client networks (IPv4 /24, IPv6 /48)',
    routes_seen          Array(LowCardinality(String)) COMMENT 'distinct route templates',
    user_agents_seen     Array(LowCardinality(String)) COMMENT 'distinct user agents',
    distinct_ips         UInt32,
    distinct_networks    UInt32,
    computed_at          DateTime64(3, 'UTC') COMMENT 'when this row was computed; the newest computation wins'
)
ENGINE = ReplacingMergeTree(computed_at)
PARTITION BY toYYYYMM(hour)
ORDER BY (key_id, hour)
TTL hour + INTERVAL 400 DAY
COMMENT 'Full values per key and hour, recomputed by key_usage_hourly_refresh; read through usage_hourly';

INSERT INTO key_usage_hourly_next SELECT * FROM key_usage_hourly;

RENAME TABLE key_usage_hourly TO key_usage_hourly_by_day, key_usage_hourly_next TO key_usage_hourly;

DROP TABLE IF EXISTS key_usage_hourly_by_day;

CREATE MATERIALIZED VIEW IF NOT EXISTS key_usage_hourly_refresh
REFRESH EVERY 1 MINUTE APPEND TO key_usage_hourly AS
WITH touched AS
(
    SELECT DISTINCT key_id, toStartOfHour(minute) AS hour
    FROM key_usage_minute
    WHERE inserted_at >= (SELECT max(computed_at) FROM key_usage_hourly) - INTERVAL 1 MINUTE
)
SELECT
    key_id, hour, project_id, requests, errors, denials,
    outcome_ok, outcome_denied, outcome_invalid, outcome_expired, outcome_revoked, outcome_disabled,
    outcome_rate_limited, outcome_error, request_bytes, response_bytes, active_minutes,
    ips_seen, networks_seen, routes_seen, user_agents_seen,
    toUInt32(length(ips_seen)) AS distinct_ips, toUInt32(length(networks_seen)) AS distinct_networks,
    now64(3) AS computed_at
FROM
(
    SELECT
        key_id, toStartOfHour(minute) AS hour, project_id,
        sum(requests) AS requests, sum(errors) AS errors, sum(denials) AS denials,
        sum(outcome_ok) AS outcome_ok, sum(outcome_denied) AS outcome_denied,
        sum(outcome_invalid) AS outcome_invalid, sum(outcome_expired) AS outcome_expired,
        sum(outcome_revoked) AS outcome_revoked, sum(outcome_disabled) AS outcome_disabled,
        sum(outcome_rate_limited) AS outcome_rate_limited, sum(outcome_error) AS outcome_error,
        sum(request_bytes) AS request_bytes, sum(response_bytes) AS response_bytes,
        toUInt16(count()) AS active_minutes
    FROM key_usage_minute FINAL
    WHERE minute >= (SELECT min(hour) FROM touched)
      AND (key_id, toStartOfHour(minute)) IN (SELECT key_id, hour FROM touched)
    GROUP BY key_id, hour, project_id
) AS counts
LEFT JOIN
(
    SELECT
        key_id, toStartOfHour(occurred_at) AS hour,
        arraySort(groupUniqArray(client_ip)) AS ips_seen,
        arraySort(groupUniqArray(network)) AS networks_seen,
        arraySort(groupUniqArray(route)) AS routes_seen,
        arraySort(groupUniqArray(user_agent)) AS user_agents_seen
    FROM usage_events
    WHERE on_time = 1
      AND occurred_at >= (SELECT min(hour) FROM touched)
      AND key_id IN (SELECT key_id FROM touched)
      AND (key_id, toStartOfHour(occurred_at)) IN (SELECT key_id, hour FROM touched)
    GROUP BY key_id, hour
) AS seen USING (key_id, hour);

ALTER TABLE key_usage_daily_refresh MODIFY REFRESH EVERY 1 MINUTE APPEND;

CREATE TABLE IF NOT EXISTS key_usage_hourly_clients
(
    key_id          String,
    hour            DateTime('UTC'),
    client_ip       IPv6,
    user_agent      LowCardinality(String),
    project_id      LowCardinality(String),
    network         IPv6 COMMENT 'client network: IPv4 /24 or IPv6 /48, as its first address',
    requests        UInt64,
    errors          UInt64,
    denials         UInt64,
    first_seen      DateTime64(3, 'UTC'),
    last_seen       DateTime64(3, 'UTC'),
    computed_at     DateTime64(3, 'UTC') COMMENT 'when this row was computed; the newest computation wins'
)
ENGINE = ReplacingMergeTree(computed_at)
PARTITION BY toYYYYMM(hour)
ORDER BY (key_id, hour, client_ip, user_agent, project_id)
TTL hour + INTERVAL 400 DAY
COMMENT 'On-time events per key, hour, address and user agent, recomputed by key_usage_hourly_clients_refresh';

CREATE MATERIALIZED VIEW IF NOT EXISTS key_usage_hourly_clients_refresh
REFRESH EVERY 1 MINUTE APPEND TO key_usage_hourly_clients AS
WITH touched AS
(
    SELECT DISTINCT key_id, toStartOfHour(minute) AS hour
    FROM key_usage_minute
    WHERE inserted_at >= (SELECT max(computed_at) FROM key_usage_hourly_clients) - INTERVAL 1 MINUTE
)
SELECT
    key_id, toStartOfHour(occurred_at) AS hour, client_ip, user_agent, project_id,
    any(network) AS network,
    count() AS requests,
    countIf(outcome = 'error' OR status >= 500) AS errors,
    countIf(outcome IN ('denied', 'invalid', 'expired', 'revoked', 'disabled', 'rate_limited')) AS denials,
    min(occurred_at) AS first_seen,
    max(occurred_at) AS last_seen,
    now64(3) AS computed_at
FROM
(
    -- one row per event (as FINAL keeps it), only events with an on-time copy
    SELECT key_id, event_id, occurred_at, any(client_ip) AS client_ip, any(user_agent) AS user_agent,
           any(project_id) AS project_id, any(network) AS network, any(outcome) AS outcome, any(status) AS status
    FROM usage_events
    WHERE occurred_at >= (SELECT min(hour) FROM touched)
      AND key_id IN (SELECT key_id FROM touched)
      AND (key_id, toStartOfHour(occurred_at)) IN (SELECT key_id, hour FROM touched)
    GROUP BY key_id, occurred_at, event_id
    HAVING max(on_time) = 1
)
GROUP BY key_id, hour, client_ip, user_agent, project_id;
