-- Live per key-hour and key-day sets and day-first rollups, to cut what the canned queries read
-- over 10M events (target p95 <= 50 ms, bench/bench_queries.py; items 4 and 5 are further down).
--
-- 1. key_usage_hourly_clients (0005) goes: at this traffic's density (most key-hours hold a few
--    events from different addresses) it was about as big as usage_events, and reading it still
--    needed a raw-event branch for stale and late key-hours. The per-key address, network and
--    user-agent queries read the key's raw events again (usage_events, FINAL); see sql/queries/.
-- 2. key_usage_hour_sets and key_usage_day_sets: per key and hour / UTC day, the sets of client
--    addresses, networks, routes and user agents of on-time events, and upper bounds of the
--    refused events (every copy, late ones included). Filled by insert-triggered materialized
--    views from usage_events, so they are live: an event is in them as soon as it is stored, and
--    nobody waits for a refresh. A set state is idempotent (an event delivered twice adds the
--    same member twice), so sets are exact; the refusal counters count every copy, so they are
--    only used to narrow a search (a copy can only add candidates; the exact count is taken
--    from the raw events afterwards). Read them with GROUP BY and the -Merge combinator.
--    key_usage_hour_sets is ordered by day first, so a window over every key reads only its days.
-- 3. usage_hourly (the view) takes the sets of its live current and previous hour from
--    key_usage_hour_sets instead of grouping the raw events of those hours.
-- Both tables are filled from the existing events here (each event once per table).

DROP VIEW IF EXISTS key_usage_hourly_clients_refresh;

DROP TABLE IF EXISTS key_usage_hourly_clients;

CREATE TABLE IF NOT EXISTS key_usage_hour_sets
(
    key_id           String,
    hour             DateTime('UTC'),
    project_id       LowCardinality(String),
    ips              AggregateFunction(groupUniqArray, IPv6) COMMENT 'client addresses of on-time events',
    networks         AggregateFunction(groupUniqArray, IPv6) COMMENT 'client networks (IPv4 /24, IPv6 /48) of on-time events',
    routes           AggregateFunction(groupUniqArray, LowCardinality(String)) COMMENT 'route templates of on-time events',
    user_agents      AggregateFunction(groupUniqArray, LowCardinality(String)) COMMENT 'user agents of on-time events',
    denied_copies    SimpleAggregateFunction(sum, UInt64) COMMENT 'stored copies of refused events (denied .. rate_limited), late ones included: an upper bound',
    inactive_copies  SimpleAggregateFunction(sum, UInt64) COMMENT 'stored copies of events refused as revoked, expired or disabled: an upper bound'
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (toDate(hour), key_id, hour, project_id)
TTL hour + INTERVAL 400 DAY
COMMENT 'Live sets per key and hour from usage_events (insert-triggered); exact under re-delivery';

CREATE TABLE IF NOT EXISTS key_usage_day_sets
(
    key_id           String,
    day              Date,
    project_id       LowCardinality(String),
    ips              AggregateFunction(groupUniqArray, IPv6) COMMENT 'client addresses of on-time events',
    networks         AggregateFunction(groupUniqArray, IPv6) COMMENT 'client networks (IPv4 /24, IPv6 /48) of on-time events',
    routes           AggregateFunction(groupUniqArray, LowCardinality(String)) COMMENT 'route templates of on-time events',
    user_agents      AggregateFunction(groupUniqArray, LowCardinality(String)) COMMENT 'user agents of on-time events',
    denied_copies    SimpleAggregateFunction(sum, UInt64) COMMENT 'stored copies of refused events, late ones included: an upper bound',
    inactive_copies  SimpleAggregateFunction(sum, UInt64) COMMENT 'stored copies of events refused as revoked, expired or disabled: an upper bound'
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (key_id, day, project_id)
TTL day + INTERVAL 1100 DAY
COMMENT 'Live sets per key and UTC day from usage_events (insert-triggered); exact under re-delivery';

CREATE MATERIALIZED VIEW IF NOT EXISTS key_usage_hour_sets_mv TO key_usage_hour_sets AS
SELECT
    key_id,
    toStartOfHour(occurred_at) AS hour,
    project_id,
    groupUniqArrayStateIf(client_ip, on_time = 1) AS ips,
    groupUniqArrayStateIf(network, on_time = 1) AS networks,
    groupUniqArrayStateIf(route, on_time = 1) AS routes,
    groupUniqArrayStateIf(user_agent, on_time = 1) AS user_agents,
    toUInt64(countIf(outcome IN ('denied', 'invalid', 'expired', 'revoked', 'disabled', 'rate_limited'))) AS denied_copies,
    toUInt64(countIf(outcome IN ('revoked', 'expired', 'disabled'))) AS inactive_copies
FROM usage_events
GROUP BY key_id, hour, project_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS key_usage_day_sets_mv TO key_usage_day_sets AS
SELECT
    key_id,
    toDate(occurred_at, 'UTC') AS day,
    project_id,
    groupUniqArrayStateIf(client_ip, on_time = 1) AS ips,
    groupUniqArrayStateIf(network, on_time = 1) AS networks,
    groupUniqArrayStateIf(route, on_time = 1) AS routes,
    groupUniqArrayStateIf(user_agent, on_time = 1) AS user_agents,
    toUInt64(countIf(outcome IN ('denied', 'invalid', 'expired', 'revoked', 'disabled', 'rate_limited'))) AS denied_copies,
    toUInt64(countIf(outcome IN ('revoked', 'expired', 'disabled'))) AS inactive_copies
FROM usage_events
GROUP BY key_id, day, project_id;

INSERT INTO key_usage_hour_sets
SELECT
    key_id, toStartOfHour(occurred_at) AS hour, project_id,
    groupUniqArrayStateIf(client_ip, on_time = 1), groupUniqArrayStateIf(network, on_time = 1),
    groupUniqArrayStateIf(route, on_time = 1), groupUniqArrayStateIf(user_agent, on_time = 1),
    toUInt64(countIf(outcome IN ('denied', 'invalid', 'expired', 'revoked', 'disabled', 'rate_limited'))),
    toUInt64(countIf(outcome IN ('revoked', 'expired', 'disabled')))
FROM usage_events
GROUP BY key_id, hour, project_id;

INSERT INTO key_usage_day_sets
SELECT
    key_id, toDate(occurred_at, 'UTC') AS day, project_id,
    groupUniqArrayStateIf(client_ip, on_time = 1), groupUniqArrayStateIf(network, on_time = 1),
    groupUniqArrayStateIf(route, on_time = 1), groupUniqArrayStateIf(user_agent, on_time = 1),
    toUInt64(countIf(outcome IN ('denied', 'invalid', 'expired', 'revoked', 'disabled', 'rate_limited'))),
    toUInt64(countIf(outcome IN ('revoked', 'expired', 'disabled')))
FROM usage_events
GROUP BY key_id, day, project_id;

-- usage_hourly as in 0002, except that the live hours' sets come from key_usage_hour_sets.
DROP VIEW IF EXISTS usage_hourly;

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
        key_id, hour,
        arraySort(groupUniqArrayMerge(ips)) AS ips_seen,
        arraySort(groupUniqArrayMerge(networks)) AS networks_seen,
        arraySort(groupUniqArrayMerge(routes)) AS routes_seen,
        arraySort(groupUniqArrayMerge(user_agents)) AS user_agents_seen
    FROM key_usage_hour_sets
    WHERE hour >= toStartOfHour(now()) - INTERVAL 1 HOUR
    GROUP BY key_id, hour
) AS seen USING (key_id, hour);

-- 4. key_usage_hourly is ordered by day first (was: key first). A window over every key (top
--    keys, project usage, the hours around whole days) then reads only its own days' rows
--    instead of the whole month partition, and one key's hours are still one range per day.
--    Rebuilt as in 0005: refresh view dropped, new table filled, swapped in by RENAME, view recreated.
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
ORDER BY (toDate(hour), key_id, hour)
TTL hour + INTERVAL 400 DAY
COMMENT 'Full values per key and hour, recomputed by key_usage_hourly_refresh; read through usage_hourly';

INSERT INTO key_usage_hourly_next SELECT * FROM key_usage_hourly;

RENAME TABLE key_usage_hourly TO key_usage_hourly_by_key, key_usage_hourly_next TO key_usage_hourly;

DROP TABLE IF EXISTS key_usage_hourly_by_key;

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

-- 5. key_usage_daily keeps the day's client addresses too (ips_seen), so multi-day questions
--    about addresses (keys_many_networks) read whole days from it. Its refresh view is recreated
--    with the new column and every existing day is recomputed once (the newest computation wins).
DROP VIEW IF EXISTS key_usage_daily_refresh;

ALTER TABLE key_usage_daily
    ADD COLUMN IF NOT EXISTS ips_seen Array(IPv6) CODEC(ZSTD(1)) COMMENT 'distinct client addresses of the day (on-time events)';

CREATE MATERIALIZED VIEW IF NOT EXISTS key_usage_daily_refresh
REFRESH EVERY 1 MINUTE APPEND TO key_usage_daily AS
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
    toUInt32(length(ips_seen)) AS distinct_ips,
    toUInt32(length(networks_seen)) AS distinct_networks,
    toUInt32(length(routes_seen)) AS distinct_routes,
    toUInt32(length(user_agents_seen)) AS distinct_user_agents,
    now64(3) AS computed_at,
    arraySort(arrayDistinct(arrayFlatten(groupArray(hour_ips)))) AS ips_seen
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

INSERT INTO key_usage_daily (key_id, day, project_id, requests, errors, denials, outcome_ok, outcome_denied, outcome_invalid, outcome_expired, outcome_revoked, outcome_disabled, outcome_rate_limited, outcome_error, request_bytes, response_bytes, active_minutes, active_hours, requests_by_hour, errors_by_hour, denials_by_hour, networks_seen, routes_seen, user_agents_seen, distinct_ips, distinct_networks, distinct_routes, distinct_user_agents, computed_at, ips_seen)
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
    toUInt32(length(ips_seen)) AS distinct_ips,
    toUInt32(length(networks_seen)) AS distinct_networks,
    toUInt32(length(routes_seen)) AS distinct_routes,
    toUInt32(length(user_agents_seen)) AS distinct_user_agents,
    now64(3) AS computed_at,
    arraySort(arrayDistinct(arrayFlatten(groupArray(hour_ips)))) AS ips_seen
FROM
(
    SELECT
        *,
        requests AS hour_requests, errors AS hour_errors, denials AS hour_denials, ips_seen AS hour_ips,
        networks_seen AS hour_networks, routes_seen AS hour_routes, user_agents_seen AS hour_user_agents
    FROM key_usage_hourly FINAL
)
GROUP BY key_id, day, project_id;

DROP VIEW IF EXISTS usage_daily;

CREATE VIEW IF NOT EXISTS usage_daily AS
SELECT
    key_id, day, project_id, requests, errors, denials,
    outcome_ok, outcome_denied, outcome_invalid, outcome_expired, outcome_revoked, outcome_disabled,
    outcome_rate_limited, outcome_error, request_bytes, response_bytes, active_minutes, active_hours,
    requests_by_hour, errors_by_hour, denials_by_hour, networks_seen, routes_seen, user_agents_seen,
    distinct_ips, distinct_networks, distinct_routes, distinct_user_agents, ips_seen
FROM key_usage_daily FINAL;
