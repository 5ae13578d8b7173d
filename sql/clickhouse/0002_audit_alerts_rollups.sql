-- Key lifecycle audit, alerts, and the hourly and daily rollups.
--
-- Duplicate-proof by construction: every table is replaced by a natural key (ReplacingMergeTree,
-- read with FINAL) and every derived number is recomputed from deduplicated sources, never added
-- up from inserts.
--
-- Why the rollups are refreshable materialized views and not insert-triggered ones: an
-- insert-triggered view sees each INSERT block on its own, so summing usage_events blocks counts
-- a re-delivered batch twice, and summing key_usage_minute blocks counts every revision of a
-- minute (the sink re-sends a minute's FULL value whenever a late event lands). Aggregate states
-- that would be idempotent (maxMap per minute, uniqExact of event ids) are far too slow to merge.
-- So the hourly rollup is recomputed, for exactly the key-hours whose minutes were written since
-- its last refresh, from key_usage_minute FINAL (counts) and usage_events (the sets of addresses,
-- networks, routes and clients), and appended to a ReplacingMergeTree where the newest
-- computation replaces the older one; the daily rollup is recomputed the same way from the hourly
-- one. Re-inserting any batch recomputes the same numbers; nothing is ever added twice.
--
-- key_usage_minute.inserted_at (filled by ClickHouse, not by the sink) tells a refresh what is new;
-- a refresh looks 1 minute further back than its last run, to cover inserts still in flight.
-- The view usage_hourly computes the current and the previous hour live, so nobody waits for a
-- refresh to see recent traffic.
-- The first refresh (at creation) covers all existing data, so no separate backfill is needed.
-- ClickHouse servers need version 24.10 or later (refreshable views without the experimental flag).

-- The client's network, for "from how many networks" questions: IPv4 /24, IPv6 /48.
-- Computed on insert, so the sink's rows are unchanged.
ALTER TABLE usage_events
    ADD COLUMN IF NOT EXISTS network IPv6
        MATERIALIZED IPv6CIDRToRange(client_ip, if(IPv6CIDRToRange(client_ip, 96).1 = toIPv6('::ffff:0.0.0.0'), 120, 48)).1
        COMMENT 'client network: IPv4 /24 or IPv6 /48, as its first address';

ALTER TABLE key_usage_minute
    ADD COLUMN IF NOT EXISTS inserted_at DateTime('UTC') DEFAULT now()
        COMMENT 'when ClickHouse received the row (not written by the sink); tells the rollups what to recompute';

ALTER TABLE key_usage_minute
    ADD INDEX IF NOT EXISTS inserted_at_minmax inserted_at TYPE minmax GRANULARITY 1;

CREATE TABLE IF NOT EXISTS key_lifecycle_events
(
    event_id        UUID,
    occurred_at     DateTime64(3, 'UTC'),
    key_id          String,
    project_id      LowCardinality(String),
    action          LowCardinality(String) COMMENT 'created, updated, rotated, renewed, disabled, enabled, revoked, expired, purged',
    actor           String,
    reason          String CODEC(ZSTD(3)),
    before          String CODEC(ZSTD(3)) COMMENT 'public key record before the change, JSON; null when created',
    after           String CODEC(ZSTD(3)) COMMENT 'public key record after the change, JSON; null when purged'
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (key_id, occurred_at, event_id)
COMMENT 'Who did what to which key and when (KeyLifecycleEvent); deduplicated by event_id, kept without TTL';

CREATE TABLE IF NOT EXISTS alerts
(
    alert_id         String,
    key_id           String,
    project_id       LowCardinality(String),
    rule             LowCardinality(String),
    severity         Enum8('info' = 0, 'low' = 1, 'medium' = 2, 'high' = 3, 'critical' = 4),
    status           Enum8('open' = 1, 'acknowledged' = 2, 'resolved' = 3),
    opened_at        DateTime64(3, 'UTC'),
    updated_at       DateTime64(3, 'UTC'),
    resolved_at      Nullable(DateTime64(3, 'UTC')),
    last_notified_at Nullable(DateTime64(3, 'UTC')),
    evidence         String CODEC(ZSTD(3)) COMMENT 'JSON object',
    message          String CODEC(ZSTD(3))
)
ENGINE = ReplacingMergeTree(updated_at)
PARTITION BY toYYYYMM(opened_at)
ORDER BY (project_id, key_id, alert_id)
COMMENT 'Alert state; every change is a new row with a later updated_at, read with FINAL';

CREATE TABLE IF NOT EXISTS key_usage_hourly
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
PARTITION BY toDate(hour)
ORDER BY (key_id, hour)
TTL hour + INTERVAL 400 DAY
COMMENT 'Full values per key and hour, recomputed by key_usage_hourly_refresh; read through usage_hourly';

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

CREATE TABLE IF NOT EXISTS key_usage_daily
(
    key_id               String,
    day                  Date,
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
    active_hours         UInt8,
    requests_by_hour     Array(UInt64) COMMENT '24 counts, UTC hour 0..23',
    errors_by_hour       Array(UInt64) COMMENT '24 counts, UTC hour 0..23',
    denials_by_hour      Array(UInt64) COMMENT '24 counts, UTC hour 0..23',
    networks_seen        Array(IPv6) CODEC(ZSTD(1)) COMMENT 'distinct client networks of the day',
    routes_seen          Array(LowCardinality(String)) COMMENT 'distinct route templates of the day',
    user_agents_seen     Array(LowCardinality(String)) COMMENT 'distinct user agents of the day',
    distinct_ips         UInt32,
    distinct_networks    UInt32,
    distinct_routes      UInt32,
    distinct_user_agents UInt32,
    computed_at          DateTime64(3, 'UTC') COMMENT 'when this row was computed; the newest computation wins'
)
ENGINE = ReplacingMergeTree(computed_at)
PARTITION BY toYYYYMM(day)
ORDER BY (key_id, day)
TTL day + INTERVAL 1100 DAY
COMMENT 'Full values per key and UTC day, recomputed from key_usage_hourly by key_usage_daily_refresh; read through usage_daily';

CREATE MATERIALIZED VIEW IF NOT EXISTS key_usage_daily_refresh
REFRESH EVERY 5 MINUTE APPEND TO key_usage_daily AS
WITH touched AS
(
    SELECT DISTINCT key_id, toDate(hour) AS day
    FROM key_usage_hourly
    WHERE computed_at >= (SELECT max(computed_at) FROM key_usage_daily) - INTERVAL 1 MINUTE
)
SELECT
    key_id, toDate(hour) AS day, project_id,
    sum(requests) AS requests, sum(errors) AS errors, sum(denials) AS denials,
    sum(outcome_ok) AS outcome_ok, sum(outcome_denied) AS outcome_denied,
    sum(outcome_invalid) AS outcome_invalid, sum(outcome_expired) AS outcome_expired,
    sum(outcome_revoked) AS outcome_revoked, sum(outcome_disabled) AS outcome_disabled,
    sum(outcome_rate_limited) AS outcome_rate_limited, sum(outcome_error) AS outcome_error,
    sum(request_bytes) AS request_bytes, sum(response_bytes) AS response_bytes,
    toUInt16(sum(active_minutes)) AS active_minutes,
    toUInt8(count()) AS active_hours,
    sumForEach(arrayMap(h -> if(toHour(hour) = h, hour_requests, 0), range(24))) AS requests_by_hour,
    sumForEach(arrayMap(h -> if(toHour(hour) = h, hour_errors, 0), range(24))) AS errors_by_hour,
    sumForEach(arrayMap(h -> if(toHour(hour) = h, hour_denials, 0), range(24))) AS denials_by_hour,
    arraySort(arrayDistinct(arrayFlatten(groupArray(hour_networks)))) AS networks_seen,
    arraySort(arrayDistinct(arrayFlatten(groupArray(hour_routes)))) AS routes_seen,
    arraySort(arrayDistinct(arrayFlatten(groupArray(hour_user_agents)))) AS user_agents_seen,
    toUInt32(length(arrayDistinct(arrayFlatten(groupArray(hour_ips))))) AS distinct_ips,
    toUInt32(length(networks_seen)) AS distinct_networks,
    toUInt32(length(routes_seen)) AS distinct_routes,
    toUInt32(length(user_agents_seen)) AS distinct_user_agents,
    now64(3) AS computed_at
FROM
(
    SELECT
        *,
        requests AS hour_requests, errors AS hour_errors, denials AS hour_denials, ips_seen AS hour_ips,
        networks_seen AS hour_networks, routes_seen AS hour_routes, user_agents_seen AS hour_user_agents
    FROM key_usage_hourly FINAL
    WHERE hour >= (SELECT min(day) FROM touched)
      AND (key_id, toDate(hour)) IN (SELECT key_id, day FROM touched)
)
GROUP BY key_id, day, project_id;

-- One row per key and hour, for dashboards (Grafana) and the canned queries. The current and the
-- previous hour are computed live from the per-minute counts and the raw events, so they are
-- exact at any moment; older hours come from key_usage_hourly. Events only land in an older hour
-- when a key that was quiet sends a backlog (late events of an active key fall within minutes of
-- its newest one); those show up at the next refresh, within a minute.
CREATE VIEW IF NOT EXISTS usage_hourly AS
SELECT
    key_id, hour, project_id, requests, errors, denials,
    outcome_ok, outcome_denied, outcome_invalid, outcome_expired, outcome_revoked, outcome_disabled,
    outcome_rate_limited, outcome_error, request_bytes, response_bytes, active_minutes,
    ips_seen, networks_seen, routes_seen, user_agents_seen, distinct_ips, distinct_networks
FROM key_usage_hourly FINAL
WHERE hour < toStartOfHour(now()) - INTERVAL 1 HOUR
UNION ALL
SELECT
    key_id, hour, project_id, requests, errors, denials,
    outcome_ok, outcome_denied, outcome_invalid, outcome_expired, outcome_revoked, outcome_disabled,
    outcome_rate_limited, outcome_error, request_bytes, response_bytes, active_minutes,
    ips_seen, networks_seen, routes_seen, user_agents_seen,
    toUInt32(length(ips_seen)) AS distinct_ips, toUInt32(length(networks_seen)) AS distinct_networks
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
    WHERE minute >= toStartOfHour(now()) - INTERVAL 1 HOUR
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
      AND occurred_at >= toStartOfHour(now()) - INTERVAL 1 HOUR
    GROUP BY key_id, hour
) AS seen USING (key_id, hour);

-- One row per key and UTC day (refreshed every five minutes; the current day may lag that much).
CREATE VIEW IF NOT EXISTS usage_daily AS
SELECT
    key_id, day, project_id, requests, errors, denials,
    outcome_ok, outcome_denied, outcome_invalid, outcome_expired, outcome_revoked, outcome_disabled,
    outcome_rate_limited, outcome_error, request_bytes, response_bytes, active_minutes, active_hours,
    requests_by_hour, errors_by_hour, denials_by_hour, networks_seen, routes_seen, user_agents_seen,
    distinct_ips, distinct_networks, distinct_routes, distinct_user_agents
FROM key_usage_daily FINAL;
